"""The audit's local target runs the engine FACEAUDIT_ENGINE (``--engine``) names, in its worker
processes, and never shares cached answers between engines."""

from __future__ import annotations

from faceaudit.audit.targets import open_target
from faceaudit.datasets import faces_dev
from faceaudit.settings import ENGINE_ENV


def test_the_local_target_runs_the_named_engine_with_its_own_cache(monkeypatch, tmp_path, faces_dev_root):
    image = str(faces_dev_root / min(label.path for label in faces_dev.read_labels(faces_dev_root)))
    answers = {}
    for name in ("dlib", "sface"):
        monkeypatch.setenv(ENGINE_ENV, name)
        target = open_target("local", cache_dir=tmp_path / "cache", workers=1, progress=False)
        try:
            described = target.describe()  # the model version is read from a worker's CreateCollection
            answers[name] = (described["model_version"], described["name"], target.fingerprint,
                             target.detect([image])[image])
            assert target.calls["DetectFaces"] == 1  # the other engine's cached answer was not reused
        finally:
            target.close()
    assert answers["dlib"][0] == "1.0" and answers["sface"][0] == "2.0"
    assert answers["sface"][1] == "local" and "engine:dlib" in answers["dlib"][1]  # sface is the default
    assert answers["dlib"][2] != answers["sface"][2]
    assert answers["dlib"][3].found and answers["sface"][3].found
