"""`faceaudit train` as a user runs it, and the trained models plugged into an audit."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest

from faceaudit.datasets import faces_dev
from faceaudit.fairness import FairScoreNormalization
from faceaudit.fairness.attribute_head import AttributeHead
from support.server import faceaudit_command

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*faceaudit_command(), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small_set(faces_dev_root, tmp_path_factory):
    """Six UTKFace images of each gender x race cell, listed in a labels CSV with absolute paths."""
    folder = tmp_path_factory.mktemp("small")
    taken: dict[tuple, int] = {}
    rows = []
    for label in faces_dev.read_labels(faces_dev_root):
        cell = (label.gender, label.race)
        if label.identity is None and taken.get(cell, 0) < 6:
            taken[cell] = taken.get(cell, 0) + 1
            rows.append({"path": str(faces_dev_root / label.path), "gender": label.gender, "race": label.race,
                         "age": label.age})
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "gender", "race", "age"])
        writer.writeheader()
        writer.writerows(rows)
    return faces_dev_root, folder


def test_train_a_balanced_head_and_audit_with_it(small_set):
    root, folder = small_set
    common = ["--data", str(root), "--labels", str(folder / "labels.csv"), "--layout", "csv"]
    refused = run("train", "attribute", *common, "--out", str(folder / "head.json"))  # the default, sface
    assert refused.returncode != 0 and "--engine dlib" in refused.stderr and not (folder / "head.json").exists()
    common += ["--engine", "dlib"]  # gender heads are classifiers on the dlib engine's embeddings
    trained = run("train", "attribute", *common, "--out", str(folder / "head.json"))
    assert trained.returncode == 0, trained.stderr
    head = AttributeHead.load(folder / "head.json")
    assert set(head.classes) == {"female", "male"}
    assert head.provenance["balanced"] and head.provenance["n_train"] == 60  # 6 of each of 10 cells

    cache = folder / "cache"
    shipped = run("audit", "attributes", *common, "--target", "local", "--out", str(folder / "shipped"),
                  "--cache", str(cache), "--min-cell", "5")
    assert shipped.returncode == 0, shipped.stderr
    with_head = run("audit", "attributes", *common, "--target", "local", "--out", str(folder / "head"),
                    "--cache", str(cache), "--min-cell", "5", "--gender-head", str(folder / "head.json"))
    assert with_head.returncode == 0, with_head.stderr
    first = json.loads((folder / "shipped" / "report.json").read_text())
    second = json.loads((folder / "head" / "report.json").read_text())
    # The head's engine is a different system: its answers are computed, never read from the
    # shipped model's cache, and the report says which system was audited.
    assert "gender-head" in second["target"]["name"] and "gender-head" not in first["target"]["name"]
    assert second["target"]["calls"].get("DetectFaces") == 60
    assert "--gender-head" in second["command"]


def test_train_a_score_normalization(small_set):
    root, folder = small_set
    trained = run("train", "normalization", "--data", str(root), "--labels", str(folder / "labels.csv"),
                  "--layout", "csv", "--clusters", "2", "--target-fmr", "0.05", "--out", str(folder / "fsn.json"))
    assert trained.returncode == 0, trained.stderr
    normalization = FairScoreNormalization.load(folder / "fsn.json")
    assert normalization.centroids.shape == (2, 128)
    assert normalization.provenance["n_embeddings"] == 60
