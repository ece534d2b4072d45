"""Reader for the faces-dev layout: labels.csv (+ pairs.csv) beside an images/ folder.

labels.csv columns: path, source, identity, gender, race, age (paths relative to
the folder). pairs.csv columns: path_a, path_b, same, source, gender_a, gender_b.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from faceaudit.settings import Settings


@dataclass(frozen=True)
class LabelledImage:
    path: str  # relative to the dataset root
    source: str
    identity: str | None
    gender: str | None
    race: str | None
    age: int | None


@dataclass(frozen=True)
class ImagePair:
    path_a: str
    path_b: str
    same: bool
    gender_a: str | None
    gender_b: str | None


def locate(explicit: str | os.PathLike | None = None) -> Path | None:
    """The faces-dev folder: ``explicit``, $FACEAUDIT_TEST_DATA, or ../shared/data/faces-dev
    beside the repository. None when none of them exists."""
    candidates = [explicit, Settings.from_env().test_data,
                  Path(__file__).resolve().parents[4] / "shared" / "data" / "faces-dev",
                  Path.cwd().parent / "shared" / "data" / "faces-dev"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "labels.csv").is_file():
            return Path(candidate)
    return None


def _blank_to_none(value: str | None) -> str | None:
    return value if value else None


def read_labels(root: str | os.PathLike) -> list[LabelledImage]:
    with open(Path(root) / "labels.csv", newline="") as f:
        return [LabelledImage(
            path=row["path"], source=row["source"], identity=_blank_to_none(row["identity"]),
            gender=_blank_to_none(row["gender"]), race=_blank_to_none(row["race"]),
            age=int(row["age"]) if row.get("age") else None,
        ) for row in csv.DictReader(f)]


def read_pairs(root: str | os.PathLike) -> list[ImagePair]:
    with open(Path(root) / "pairs.csv", newline="") as f:
        return [ImagePair(path_a=row["path_a"], path_b=row["path_b"], same=row["same"] == "1",
                          gender_a=_blank_to_none(row["gender_a"]), gender_b=_blank_to_none(row["gender_b"]))
                for row in csv.DictReader(f)]


# The similarity scale is calibrated on one half of faces-dev and checked on the
# other, so that no test or benchmark checks it on the images that set it.
CALIBRATION, CHECK = "calibration", "check"


def split_halves(labels: list[LabelledImage]) -> dict[str, str]:
    """Each image's half, {path: CALIBRATION or CHECK}, by a fixed rule.

    UTKFace: within each gender x race cell, images sorted by path alternate
    between the halves (100 each). LFW: people sorted by name alternate, so all
    photos of one person are in the same half and pairs never straddle them.
    """
    halves: dict[str, str] = {}
    cells: dict[tuple, list[str]] = {}
    identities: dict[str, list[str]] = {}
    for label in labels:
        if label.identity:
            identities.setdefault(label.identity, []).append(label.path)
        else:
            cells.setdefault((label.source, label.gender, label.race), []).append(label.path)
    for paths in cells.values():
        for i, path in enumerate(sorted(paths)):
            halves[path] = CALIBRATION if i % 2 == 0 else CHECK
    for i, identity in enumerate(sorted(identities)):
        for path in identities[identity]:
            halves[path] = CALIBRATION if i % 2 == 0 else CHECK
    return halves


def pairs_in_half(pairs: list[ImagePair], halves: dict[str, str], half: str) -> list[ImagePair]:
    return [p for p in pairs if halves.get(p.path_a) == half and halves.get(p.path_b) == half]
