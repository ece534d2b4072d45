"""Labelled image sets: one in-memory model for every on-disk layout (readers.py reads them).

Every reader returns an AuditDataset: absolute image paths with whatever labels
the layout carries (identity, gender, race or skin type, age, free-form group
columns) and, where the layout has them, explicit genuine/impostor pairs.
Problems found on load (missing files, unknown labels, duplicate paths) are
collected with counts, not silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Label vocabularies every reader maps into, so groups line up across datasets.
GENDERS = ("female", "male")


@dataclass(frozen=True)
class AuditImage:
    path: str  # absolute
    identity: str | None = None
    gender: str | None = None  # one of GENDERS, or None when unlabelled
    race: str | None = None  # race or skin-type label as the dataset names it
    age: float | None = None
    groups: dict[str, str] = field(default_factory=dict)  # any further group columns

    def group(self, key: str) -> str | None:
        """The value of a grouping attribute: gender, race, age band, or a free-form column."""
        if key == "gender":
            return self.gender
        if key == "race":
            return self.race
        if key == "age_band":
            return age_band(self.age)
        return self.groups.get(key)


@dataclass(frozen=True)
class AuditPair:
    path_a: str
    path_b: str
    same: bool


@dataclass
class DatasetProblems:
    """What was wrong with a dataset on load: kind -> list of examples (all of them)."""

    missing_files: list[str] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)
    duplicate_paths: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"missing_files": len(self.missing_files), "unknown_labels": len(self.unknown_labels),
                "duplicate_paths": len(self.duplicate_paths), "other": len(self.other)}

    def __bool__(self) -> bool:
        return any(self.counts().values())


@dataclass
class AuditDataset:
    name: str
    root: str
    images: list[AuditImage]
    pairs: list[AuditPair] | None = None
    problems: DatasetProblems = field(default_factory=DatasetProblems)
    notes: list[str] = field(default_factory=list)  # e.g. "UTKFace has no identities: ..."

    def describe(self) -> dict:
        return {"name": self.name, "root": self.root, "images": len(self.images),
                "pairs": None if self.pairs is None else len(self.pairs),
                "problems": self.problems.counts(), "notes": self.notes}


def age_band(age: float | None) -> str | None:
    if age is None:
        return None
    for upper, band in ((18, "0-17"), (30, "18-29"), (45, "30-44"), (60, "45-59")):
        if age < upper:
            return band
    return "60+"


# Spellings of gender labels that readers accept, mapped into GENDERS. Numeric codes
# (0/1) are deliberately absent: datasets disagree on them (UTKFace: 0 = male), so a
# reader that knows its dataset's code maps it itself and every other reader refuses it.
GENDER_ALIASES = {
    "female": "female", "f": "female", "woman": "female", "women": "female",
    "male": "male", "m": "male", "man": "male", "men": "male",
}


def normalize_gender(value: str | None) -> str | None:
    """A gender label in GENDERS, None for a blank one; ValueError for anything unrecognised."""
    if value is None or not value.strip():
        return None
    try:
        return GENDER_ALIASES[value.strip().lower()]
    except KeyError:
        accepted = ", ".join(sorted(GENDER_ALIASES))
        raise ValueError(f"unrecognised gender {value.strip()!r} (accepted: {accepted})") from None
