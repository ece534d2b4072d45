"""Readers for the on-disk layouts of labelled image sets, all returning an AuditDataset.

Layouts (``load_dataset(..., layout=...)``):

- ``csv``: a folder plus a CSV with a ``path`` column (relative to the folder, or
  absolute) and any of ``identity``, ``gender``, ``race`` or ``skin_type``, ``age``;
  every other column becomes a free-form group (``AuditImage.groups``).
- ``faces-dev``: labels.csv (the csv layout) + pairs.csv beside images/.
- ``utkface``: files named ``age_gender_race_date.jpg[.chip.jpg]``.
- ``fairface``: FairFace's label CSV (``file, age, gender, race, service_test``).
- ``lfw``: ``Name/Name_0001.jpg`` folders plus LFW's ``pairs.txt`` (or View 1's
  ``pairsDevTrain.txt`` / ``pairsDevTest.txt``); optional ``labels=`` CSV keyed by
  ``identity`` adds gender (or any other label) per person.

Every reader checks what it reads and records each problem in
``AuditDataset.problems`` (full lists, nothing silently dropped):

- ``missing_files``: listed but not on disk (the row is skipped);
- ``duplicate_paths``: the same image listed again (the first listing is kept);
- ``unknown_labels``: a value that is not recognised (the image is KEPT with that
  label set to None);
- ``other``: entries ``"<kind>: <detail>"``, kinds in OTHER_KINDS (malformed UTKFace
  names, pairs naming images not in the set, unreadable rows or pair lines, ...).

Label values:

- gender: female/f/woman/women and male/m/man/men, any case (labelled.GENDER_ALIASES);
  numeric codes are refused (datasets disagree on them) except by the UTKFace
  reader, whose file names define 0 = male, 1 = female.
- skin_type: Fitzpatrick types I-VI (also 1-6, "type III") -> "I".."VI", or Gender
  Shades' "lighter"/"darker". Also sets groups["skin_type"] and groups["skin_group"]
  ("lighter" for I-III, "darker" for IV-VI, as Gender Shades grouped them). The race
  field takes the skin type when the CSV has no race column.
- race: as the dataset names it (free text in csv; fixed vocabularies for UTKFace
  and FairFace, where anything else is an unknown label).
- age: a number, a band "20-29" (its midpoint, 24.5; the band is kept in
  groups["age_band_label"]) or an open band "more than 70" / "70+" (70 + 5 = 75).
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from faceaudit.datasets import faces_dev  # the fixed calibration/check split
from faceaudit.datasets.labelled import (
    AuditDataset,
    AuditImage,
    AuditPair,
    DatasetProblems,
    normalize_gender,
)
from faceaudit.errors import InvalidParameterException

LAYOUTS = ("faces-dev", "csv", "utkface", "fairface", "lfw")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Kinds of entries in DatasetProblems.other ("<kind>: <detail>").
MALFORMED_NAME = "malformed_name"  # a UTKFace file whose name does not carry age_gender_race_date
PAIR_NOT_IN_SET = "pair_not_in_set"  # a pair naming an image that is not in the dataset
BAD_ROW = "bad_row"  # a CSV row without a path, or with more values than columns
BAD_PAIRS_LINE = "bad_pairs_line"  # a pairs.txt line that is neither "name n1 n2" nor "name1 n1 name2 n2"
PAIRS_COUNT = "pairs_count"  # pairs.txt holds a different number of pairs than its header says
UNUSED_LABEL = "unused_label"  # an identity in an LFW labels CSV that has no folder, or is listed twice
OTHER_KINDS = (MALFORMED_NAME, PAIR_NOT_IN_SET, BAD_ROW, BAD_PAIRS_LINE, PAIRS_COUNT, UNUSED_LABEL)

# UTKFace: [age]_[gender]_[race]_[date&time].jpg, gender 0 = male, 1 = female; race
# 0-4 = White, Black, Asian, Indian, Others (Hispanic, Latino, Middle Eastern, ...).
UTKFACE_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.jpg(?:\.chip\.jpg)?$", re.IGNORECASE)
UTKFACE_GENDERS = {"0": "male", "1": "female"}
UTKFACE_RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}

FAIRFACE_RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
                  "Middle Eastern")

FITZPATRICK = ("I", "II", "III", "IV", "V", "VI")
SKIN_GROUPS = ("lighter", "darker")
OPEN_AGE_BAND_HALF_WIDTH = 5.0  # "more than 70" -> 75: half of the 10-year bands below it
MAX_AGE = 130.0

_CANONICAL_COLUMNS = {
    "path": "path", "identity": "identity", "gender": "gender", "race": "race", "age": "age",
    "skin_type": "skin_type", "skin type": "skin_type", "skin-type": "skin_type",
}


# --------------------------------------------------------------------------- entry points


def load_dataset(data: str | os.PathLike, labels: str | os.PathLike | None = None,
                 layout: str = "auto") -> AuditDataset:
    """Read a labelled image set in any supported layout (see the module docstring).

    ``data`` is the folder (or, for the csv layout, the CSV itself, whose folder is
    then the root); ``labels`` a CSV of labels where the layout takes one. With
    ``layout="auto"`` the layout is detected by detect_layout().
    """
    data_path, labels_path = _resolve_inputs(data, labels)
    if layout == "auto":
        layout = detect_layout(data_path, labels_path)
    if layout == "faces-dev":
        if labels_path is not None and labels_path != data_path / "labels.csv":
            raise InvalidParameterException(
                f"the faces-dev layout reads {data_path / 'labels.csv'}; use layout='csv' for another labels file")
        return read_faces_dev(data_path)
    if layout == "csv":
        if labels_path is None:
            if not (data_path / "labels.csv").is_file():
                raise InvalidParameterException(
                    f"the csv layout needs a labels CSV: pass labels=... (no labels.csv in {data_path})")
            labels_path = data_path / "labels.csv"
        return read_csv(data_path, labels_path)
    if layout == "utkface":
        if labels_path is not None:
            raise InvalidParameterException("the utkface layout takes its labels from the file names; "
                                            "do not pass labels (use layout='csv' for a labels CSV)")
        return read_utkface(data_path)
    if layout == "fairface":
        return read_fairface(data_path, labels_path)
    if layout == "lfw":
        return read_lfw(data_path, labels_path)
    raise InvalidParameterException(f"unknown dataset layout {layout!r}: use one of auto, {', '.join(LAYOUTS)}")


def detect_layout(data: str | os.PathLike, labels: str | os.PathLike | None = None) -> str:
    """The layout of ``data``, in this order: faces-dev (labels.csv + pairs.csv + images/),
    lfw (a pairs*.txt), fairface (a CSV with ``file`` and ``service_test`` columns, given
    as ``labels`` or alone in the folder), csv (``labels`` given), utkface (most image
    files named like UTKFace's), and lfw again for LFW person folders without a pairs file."""
    root, labels_path = _resolve_inputs(data, labels)
    if ((root / "labels.csv").is_file() and (root / "pairs.csv").is_file() and (root / "images").is_dir()
            and labels_path in (None, root / "labels.csv")):
        return "faces-dev"
    if _pairs_files(root):
        return "lfw"
    candidates = [labels_path] if labels_path is not None else sorted(root.glob("*.csv"))
    if any({"file", "service_test"} <= set(_csv_columns(path)) for path in candidates):
        return "fairface"
    if labels_path is not None:
        return "csv"
    images = _image_files(root)
    if images and sum(bool(UTKFACE_NAME.match(p.name)) for p in images) * 2 > len(images):
        return "utkface"
    try:
        _lfw_image_root(root)  # LFW person folders without a pairs file
        return "lfw"
    except InvalidParameterException:
        pass
    raise InvalidParameterException(
        f"cannot tell the layout of {root}: no labels.csv + pairs.csv + images/ (faces-dev), no pairs*.txt "
        f"(lfw), no FairFace label CSV, no labels= CSV (csv), and most of its {len(images)} image files are "
        f"not named like UTKFace's, and it holds no LFW person folders (Name/Name_0001.jpg); "
        f"pass layout= (one of {', '.join(LAYOUTS)}) and labels= as needed")


def read_csv(data: str | os.PathLike, labels: str | os.PathLike, name: str | None = None) -> AuditDataset:
    """The general layout: ``data`` folder + a labels CSV with a ``path`` column."""
    root, labels_path = _resolve_inputs(data, labels)
    if labels_path is None:
        raise InvalidParameterException(f"the csv layout needs a labels CSV for {root}")
    builder = _Builder(name or root.name, root)
    columns, rows = _read_table(labels_path)
    if "path" not in columns:
        raise InvalidParameterException(
            f"{labels_path}: no 'path' column (columns: {', '.join(columns) or 'none'})")
    builder.add_rows(rows, labels_path.name)
    return builder.finish()


def read_faces_dev(data: str | os.PathLike | None = None) -> AuditDataset:
    """faces-dev: its labels.csv read as the csv layout, plus pairs.csv.

    Each image's half of the calibration/check split (faces_dev.split_halves) is put
    in groups["half"], so an audit can keep to the half the similarity scale was not
    calibrated on.
    """
    root = faces_dev.locate(data) if data is None else Path(data)
    if root is None:
        raise InvalidParameterException("faces-dev not found: set FACEAUDIT_TEST_DATA or pass its folder")
    root = Path(root).expanduser().resolve()
    builder = _Builder("faces-dev", root)
    columns, rows = _read_table(root / "labels.csv")
    if "path" not in columns:
        raise InvalidParameterException(f"{root / 'labels.csv'}: no 'path' column")
    builder.add_rows(rows, "labels.csv")
    try:
        listed = faces_dev.read_pairs(root)
    except (OSError, KeyError) as error:
        raise InvalidParameterException(f"{root / 'pairs.csv'}: cannot read pairs ({error!r})") from None
    builder.add_pairs((_absolute(root, p.path_a), _absolute(root, p.path_b), p.same, f"{p.path_a} | {p.path_b}")
                       for p in listed)
    dataset = builder.finish()

    halves = faces_dev.split_halves([
        faces_dev.LabelledImage(path=os.path.relpath(image.path, root), source=image.groups.get("source", ""),
                                identity=image.identity, gender=image.gender, race=image.race, age=None)
        for image in dataset.images])
    dataset.images = [replace(image, groups={**image.groups, "half": halves[os.path.relpath(image.path, root)]})
                      for image in dataset.images]
    dataset.notes.append(
        "faces-dev: its UTKFace images carry no identities (each comes from a different photo), so its pairs "
        "are all LFW pairs; UTKFace images serve attribute audits and impostor-only comparisons.")
    dataset.notes.append(
        f"faces-dev: groups['half'] is each image's half ({faces_dev.CALIBRATION}/{faces_dev.CHECK}); the local "
        f"engine's similarity scale was calibrated on the {faces_dev.CALIBRATION} half.")
    return dataset


def read_utkface(data: str | os.PathLike, name: str | None = None) -> AuditDataset:
    """A folder (searched recursively) of UTKFace files, ``age_gender_race_date.jpg[.chip.jpg]``."""
    root = _existing_dir(data)
    builder = _Builder(name or root.name, root)
    images = _image_files(root)
    for path in images:
        rel = path.relative_to(root).as_posix()
        match = UTKFACE_NAME.match(path.name)
        if not match:
            builder.other(MALFORMED_NAME, f"{rel} (expected age_gender_race_date.jpg[.chip.jpg]; skipped)")
            continue
        age_text, gender_code, race_code, _ = match.groups()
        gender = UTKFACE_GENDERS.get(gender_code)
        if gender is None:
            builder.unknown(rel, "gender", gender_code, "UTKFace gender code, 0 = male or 1 = female")
        race = UTKFACE_RACES.get(race_code)
        if race is None:
            builder.unknown(rel, "race", race_code, "UTKFace race code 0-4")
        age: float | None = float(int(age_text))
        if age is not None and age > MAX_AGE:
            builder.unknown(rel, "age", age_text, f"an age of at most {MAX_AGE:g}")
            age = None
        builder.add_image(rel, str(path), AuditImage(path=str(path), gender=gender, race=race, age=age))
    ignored = _count_files(root) - len(images)
    if ignored:
        builder.notes.append(f"{ignored} files that are not images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                             "were not read.")
    builder.notes.append("UTKFace: labels come from the file names (age_gender_race: model-estimated, then "
                         "checked by hand, so expect some label noise); race 'Others' covers Hispanic, Latino, "
                         "Middle Eastern and more.")
    return builder.finish()


def read_fairface(data: str | os.PathLike, labels: str | os.PathLike | None = None,
                  name: str | None = None) -> AuditDataset:
    """FairFace: its label CSV (``file, age, gender, race, service_test``), ``file`` relative to ``data``.

    Without ``labels`` the folder must hold exactly one CSV with ``file`` and
    ``service_test`` columns (e.g. only fairface_label_val.csv).
    """
    root, labels_path = _resolve_inputs(data, labels)
    if labels_path is None:
        found = [p for p in sorted(root.glob("*.csv")) if {"file", "service_test"} <= set(_csv_columns(p))]
        if len(found) != 1:
            raise InvalidParameterException(
                f"{root}: {'no' if not found else len(found)} FairFace label CSVs "
                f"({', '.join(p.name for p in found) or 'none'}); pass the one to read as labels=")
        labels_path = found[0]
    columns, rows = _read_table(labels_path)
    if "file" not in columns:
        raise InvalidParameterException(f"{labels_path}: no 'file' column (columns: {', '.join(columns)})")
    builder = _Builder(name or root.name, root, race_vocabulary=FAIRFACE_RACES)
    renamed = []
    for row_number, row in rows:
        row = dict(row)
        row["path"] = row.pop("file")
        renamed.append((row_number, row))
    builder.add_rows(renamed, labels_path.name)
    builder.notes.append(
        "FairFace: age is labelled in bands; age is the band's midpoint ('20-29' -> 24.5, 'more than 70' -> 75) "
        "and the band itself is in groups['age_band_label'].")
    return builder.finish()


def read_lfw(data: str | os.PathLike, labels: str | os.PathLike | None = None,
             pairs_file: str | os.PathLike | None = None, name: str | None = None) -> AuditDataset:
    """LFW: ``Name/Name_0001.jpg`` folders (in ``data`` or one sub-folder such as lfw/ or
    lfw-deepfunneled/) and LFW's pairs file; ``labels``, a CSV with an ``identity``
    column, adds labels (gender, race/skin_type, others) to every image of each person."""
    root, labels_path = _resolve_inputs(data, labels)
    image_root = _lfw_image_root(root)
    builder = _Builder(name or root.name, root)
    for person in sorted(p for p in image_root.iterdir() if p.is_dir()):
        for path in sorted(p for p in person.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
            builder.add_image(path.relative_to(root).as_posix(), str(path),
                              AuditImage(path=str(path), identity=person.name))
    if labels_path is not None:
        _apply_identity_labels(builder, labels_path)
    else:
        builder.notes.append("LFW: no gender or race labels (pass labels= a CSV with identity,gender columns).")

    if pairs_file is not None:
        chosen: Path | None = Path(pairs_file).expanduser().resolve()
        if chosen is None or not chosen.is_file():
            raise InvalidParameterException(f"pairs file {chosen} not found")
    else:
        found = _pairs_files(root) or (_pairs_files(image_root) if image_root != root else [])
        chosen = found[0] if found else None
        if chosen is not None and len(found) > 1:
            builder.notes.append(f"LFW: pairs read from {chosen.name}; not read: "
                                 f"{', '.join(p.name for p in found[1:])} (choose with read_lfw(pairs_file=...)).")
    if chosen is not None:
        builder.add_pairs(_read_lfw_pairs(chosen, image_root, builder))
    else:
        builder.notes.append("LFW: no pairs*.txt found; the dataset has no explicit pairs (use make_pairs).")
    return builder.finish()


# --------------------------------------------------------------------------- pairs and summaries


def problem_kinds(problems: DatasetProblems) -> dict[str, int]:
    """Counts by kind, with ``other`` broken down by its entries' ``<kind>:`` prefixes."""
    counts = {kind: count for kind, count in problems.counts().items() if kind != "other" and count}
    for entry in problems.other:
        kind = entry.split(":", 1)[0] if ":" in entry else "other"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def describe_problems(dataset: AuditDataset, examples: int = 3) -> str:
    """A short human summary of what was wrong with the dataset on load, with counts."""
    head = f"{dataset.name}: {len(dataset.images)} images"
    if dataset.pairs is not None:
        head += f", {len(dataset.pairs)} pairs"
    problems = dataset.problems
    if not problems:
        return head + "; no problems found."
    total = sum(problems.counts().values())
    lines = [f"{head}; {total} problem{'s' if total != 1 else ''} found:"]
    described = (
        ("missing_files", problems.missing_files, "listed but not on disk (skipped)"),
        ("duplicate_paths", problems.duplicate_paths, "listed more than once (first listing kept)"),
        ("unknown_labels", problems.unknown_labels, "unrecognised label values (image kept, label unset)"),
    )
    for kind, entries, meaning in described:
        if entries:
            lines.append(f"  {kind}: {len(entries)} {meaning}; e.g. {_examples(entries, examples)}")
    if problems.other:
        by_kind: dict[str, list[str]] = defaultdict(list)
        for entry in problems.other:
            kind, _, detail = entry.partition(": ") if ": " in entry else ("other", "", entry)
            by_kind[kind].append(detail)
        for kind, details in by_kind.items():
            lines.append(f"  {kind}: {len(details)}; e.g. {_examples(details, examples)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- building


@dataclass
class _Builder:
    """Collects images, pairs and problems for one dataset, checking as it goes."""

    name: str
    root: Path
    race_vocabulary: Sequence[str] | None = None
    images: list[AuditImage] = field(default_factory=list)
    pairs: list[AuditPair] | None = None
    problems: DatasetProblems = field(default_factory=DatasetProblems)
    notes: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    index: dict[str, int] = field(default_factory=dict)  # absolute path -> position in images

    def other(self, kind: str, detail: str) -> None:
        self.problems.other.append(f"{kind}: {detail}")

    def unknown(self, where: str, label: str, value: str, expected: str) -> None:
        self.problems.unknown_labels.append(f"{where}: {label} {value!r} (expected {expected})")

    def add_image(self, listed: str, absolute: str, image: AuditImage | None) -> bool:
        """Add an image unless it is a duplicate or missing. ``image`` None: labels come later."""
        if absolute in self.seen:
            self.problems.duplicate_paths.append(listed)
            return False
        self.seen.add(absolute)
        if not os.path.isfile(absolute):
            self.problems.missing_files.append(listed)
            return False
        if image is not None:
            self.index[absolute] = len(self.images)
            self.images.append(image)
        return True

    def add_rows(self, rows: Iterable[tuple[int, dict[str, str]]], source: str) -> None:
        """CSV rows with canonical column names (path, identity, gender, race, skin_type, age)."""
        for row_number, row in rows:
            where = f"{source} row {row_number}"
            if row.pop(None, None):  # type: ignore[call-overload]
                self.other(BAD_ROW, f"{where}: more values than columns (extra values ignored)")
            listed = (row.get("path") or "").strip()
            if not listed:
                self.other(BAD_ROW, f"{where}: no path (skipped)")
                continue
            absolute = _absolute(self.root, listed)
            if self.add_image(listed, absolute, None):
                self.index[absolute] = len(self.images)
                self.images.append(AuditImage(path=absolute, **self.parse_labels(row, listed)))

    def parse_labels(self, row: Mapping[str, str | None], where: str) -> dict[str, Any]:
        """identity, gender, race, age and groups from one row; unknown values -> problems, None."""
        values = {key: (value or "").strip() for key, value in row.items() if key is not None}
        groups = {key: value for key, value in values.items()
                  if key not in ("path", "identity", "gender", "race", "skin_type", "age") and value}
        try:
            gender = normalize_gender(values.get("gender"))
        except ValueError:
            gender = None
            self.unknown(where, "gender", values["gender"], "female/f/woman or male/m/man")
        race = values.get("race") or None
        if race is not None and self.race_vocabulary is not None and race not in self.race_vocabulary:
            self.unknown(where, "race", race, "one of " + ", ".join(self.race_vocabulary))
            race = None
        if values.get("skin_type"):
            skin = _normalize_skin_type(values["skin_type"])
            if skin is None:
                self.unknown(where, "skin_type", values["skin_type"], "Fitzpatrick I-VI, or lighter/darker")
            else:
                groups["skin_type"] = skin
                groups["skin_group"] = skin if skin in SKIN_GROUPS else (
                    "lighter" if FITZPATRICK.index(skin) < 3 else "darker")
                if "race" not in values:
                    race = skin
        age = None
        if values.get("age"):
            try:
                age, band = _parse_age(values["age"])
            except ValueError as error:
                self.unknown(where, "age", values["age"], str(error))
            else:
                if band is not None:
                    groups["age_band_label"] = band
        return {"identity": values.get("identity") or None, "gender": gender, "race": race, "age": age,
                "groups": groups}

    def add_pairs(self, listed: Iterable[tuple[str, str, bool, str]]) -> None:
        """Pairs (absolute a, absolute b, same, as listed); those naming images not in the set are skipped."""
        self.pairs = [] if self.pairs is None else self.pairs
        for path_a, path_b, same, description in listed:
            absent = [p for p in (path_a, path_b) if p not in self.index]
            if absent:
                self.other(PAIR_NOT_IN_SET, f"{description} (not in the set: "
                                            f"{', '.join(_relative(self.root, p) for p in absent)}; skipped)")
                continue
            self.pairs.append(AuditPair(path_a, path_b, same))

    def finish(self) -> AuditDataset:
        if not self.images:
            counts = ", ".join(f"{k} {v}" for k, v in problem_kinds(self.problems).items()) or "nothing listed"
            raise InvalidParameterException(f"{self.name}: no usable images in {self.root} ({counts})")
        notes = list(self.notes)
        if self.problems.unknown_labels:
            notes.append(f"{len(self.problems.unknown_labels)} unrecognised label values were set to None; "
                         "their images are kept (see problems.unknown_labels).")
        # The no-identity note is make_pairs' to add: it matters only where pairs are formed.
        return AuditDataset(name=self.name, root=str(self.root), images=self.images, pairs=self.pairs,
                            problems=self.problems, notes=notes)


# --------------------------------------------------------------------------- helpers


def _resolve_inputs(data: str | os.PathLike, labels: str | os.PathLike | None) -> tuple[Path, Path | None]:
    data_path = Path(data).expanduser()
    labels_path = Path(labels).expanduser().resolve() if labels is not None else None
    if data_path.is_file() and data_path.suffix.lower() == ".csv" and labels_path is None:
        labels_path, data_path = data_path.resolve(), data_path.parent
    root = _existing_dir(data_path)
    if labels_path is not None and not labels_path.is_file():
        raise InvalidParameterException(f"labels file {labels_path} not found")
    return root, labels_path


def _existing_dir(path: str | os.PathLike) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        raise InvalidParameterException(f"dataset folder {resolved} not found")
    return resolved


def _absolute(root: Path, listed: str) -> str:
    return os.path.normpath(os.path.join(root, listed))


def _relative(root: Path, path: str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Columns (canonical names for the known ones) and (row number, row) pairs; row 2 is the first after the header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InvalidParameterException(f"{path}: empty file (expected a header row)")
            columns = [_CANONICAL_COLUMNS.get(name.strip().lower(), name.strip()) for name in header]
            rows = []
            for number, values in enumerate(reader, start=2):
                if not any(value.strip() for value in values):
                    continue
                row: dict = dict(zip(columns, values))
                if len(values) > len(columns):
                    row[None] = values[len(columns):]
                rows.append((number, row))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InvalidParameterException(f"{path}: cannot read it as CSV ({error})") from None
    return columns, rows


def _csv_columns(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [name.strip().lower() for name in header]


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def _normalize_skin_type(value: str) -> str | None:
    text = value.strip().lower()
    if text in SKIN_GROUPS:
        return text
    text = re.sub(r"^(fitzpatrick|type)\s*", "", text).strip()
    text = re.sub(r"^type\s*", "", text).strip()
    if text.isdigit() and 1 <= int(text) <= 6:
        return FITZPATRICK[int(text) - 1]
    return text.upper() if text.upper() in FITZPATRICK else None


_AGE_RANGE = re.compile(r"^(\d+(?:\.\d+)?)\s*[-\u2013]\s*(\d+(?:\.\d+)?)$")
_AGE_OPEN = re.compile(r"^(?:more than|over|>=?)\s*(\d+(?:\.\d+)?)$|^(\d+(?:\.\d+)?)\s*\+$")


def _parse_age(text: str) -> tuple[float, str | None]:
    """(age, band label or None) from "34", "20-29" (-> 24.5) or "more than 70" / "70+" (-> 75)."""
    value = text.strip()
    try:
        age, band = float(value), None
    except ValueError:
        if match := _AGE_RANGE.match(value):
            low, high = float(match.group(1)), float(match.group(2))
            if high < low:
                raise ValueError("a number, a band low-high or 'more than N'") from None
            age, band = (low + high) / 2.0, value
        elif match := _AGE_OPEN.match(value.lower()):
            age, band = float(match.group(1) or match.group(2)) + OPEN_AGE_BAND_HALF_WIDTH, value
        else:
            raise ValueError("a number, a band low-high or 'more than N'") from None
    if not 0 <= age <= MAX_AGE:
        raise ValueError(f"an age between 0 and {MAX_AGE:g}")
    return age, band


def _pairs_files(folder: Path) -> list[Path]:
    """pairs*.txt files in ``folder``, preferred first: pairs.txt, pairsDevTest.txt, pairsDevTrain.txt, others."""
    preference = {"pairs.txt": 0, "pairsdevtest.txt": 1, "pairsdevtrain.txt": 2}
    found = [p for p in folder.glob("*.txt") if p.is_file() and p.name.lower().startswith("pairs")]
    return sorted(found, key=lambda p: (preference.get(p.name.lower(), 3), p.name))


_LFW_FILE = re.compile(r"^(.+)_(\d{4})\.[A-Za-z]+$")


def _lfw_image_root(root: Path) -> Path:
    """``root`` or one of its sub-folders, whichever holds the most Name/Name_NNNN.jpg person folders."""
    def persons(folder: Path) -> int:
        count = 0
        for person in folder.iterdir():
            if person.is_dir() and any((m := _LFW_FILE.match(f.name)) and m.group(1) == person.name
                                       for f in person.iterdir()):
                count += 1
        return count

    scored = [(persons(folder), i, folder) for i, folder in
              enumerate([root] + sorted(p for p in root.iterdir() if p.is_dir()))]
    best = max(scored, key=lambda s: (s[0], -s[1]))
    if best[0] == 0:
        raise InvalidParameterException(f"{root}: no LFW person folders (Name/Name_0001.jpg) in it or its sub-folders")
    return best[2]


def _read_lfw_pairs(path: Path, image_root: Path, builder: _Builder) -> list[tuple[str, str, bool, str]]:
    """LFW pairs: header "folds<TAB>n" (View 2, n genuine + n impostor per fold) or "n" (View 1),
    then "name n1 n2" (genuine) and "name1 n1 name2 n2" (impostor) lines."""
    def image(name: str, number: str) -> str:
        return os.path.join(image_root, name, f"{name}_{int(number):04d}.jpg")

    lines = [(i, line.split()) for i, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    expected = None
    if lines and all(token.isdigit() for token in lines[0][1]) and len(lines[0][1]) in (1, 2):
        header = [int(token) for token in lines[0][1]]
        expected = 2 * header[0] * header[1] if len(header) == 2 else 2 * header[0]
        lines = lines[1:]
    else:
        builder.other(BAD_PAIRS_LINE, f"{path.name} line 1: no count header ('10<TAB>300' or '1100'); "
                                      "read as a pair line")
    pairs = []
    for number, tokens in lines:
        if len(tokens) == 3 and tokens[1].isdigit() and tokens[2].isdigit():
            a, b, same = image(tokens[0], tokens[1]), image(tokens[0], tokens[2]), True
        elif len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
            a, b, same = image(tokens[0], tokens[1]), image(tokens[2], tokens[3]), False
        else:
            builder.other(BAD_PAIRS_LINE, f"{path.name} line {number}: {' '.join(tokens)!r} (skipped)")
            continue
        pairs.append((a, b, same, f"{path.name} line {number}: {' '.join(tokens)}"))
    if expected is not None and len(pairs) != expected:
        builder.other(PAIRS_COUNT, f"{path.name}: header announces {expected} pairs, "
                                   f"{len(pairs)} readable pair lines found")
    return pairs


def _apply_identity_labels(builder: _Builder, labels_path: Path) -> None:
    """Labels per person from a CSV with an identity column, applied to all of that person's images."""
    columns, rows = _read_table(labels_path)
    if "identity" not in columns:
        raise InvalidParameterException(
            f"{labels_path}: LFW labels need an 'identity' column (columns: {', '.join(columns)})")
    present = {image.identity for image in builder.images if image.identity is not None}
    per_identity: dict[str, dict] = {}
    for row_number, row in rows:
        row.pop(None, None)  # type: ignore[call-overload]
        identity = (row.get("identity") or "").strip()
        where = f"{labels_path.name} row {row_number}"
        if not identity:
            builder.other(BAD_ROW, f"{where}: no identity (skipped)")
            continue
        if identity in per_identity:
            builder.other(UNUSED_LABEL, f"{where}: {identity} listed again (first row kept)")
            continue
        if identity not in present:
            builder.other(UNUSED_LABEL, f"{where}: {identity} has no image folder (skipped)")
            continue
        per_identity[identity] = builder.parse_labels(row, f"{where} ({identity})")
    builder.images = [replace(image, **{k: v for k, v in per_identity[image.identity].items() if k != "identity"})
                      if image.identity in per_identity else image for image in builder.images]
    unlabelled = sorted(present - set(per_identity))
    if unlabelled:
        builder.notes.append(f"LFW: {len(unlabelled)} of {len(present)} people have no row in {labels_path.name}; "
                             "their images have no labels beyond identity.")


def _examples(entries: list[str], count: int) -> str:
    shown = "; ".join(entries[:count])
    return shown + (f"; ... ({len(entries) - count} more)" if len(entries) > count else "")
