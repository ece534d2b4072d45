"""CsvTarget: predictions exported from any other face system, audited like a live target.

The file is UTF-8 CSV with a header row. Which questions it answers is read
from the header; one file may answer several (leave the other columns of a row
empty), or use one file per kind.

Detections (attributes protocol) -- one row per image:
    ``path, face_detected, gender, gender_confidence, age``
    ``face_detected``: 1/0, true/false or yes/no (a row with no face needs
    nothing else); ``gender``: female/male (also f/m, woman/man; any case);
    ``gender_confidence``: 0-100, optional; ``age`` (a point estimate) and/or
    ``age_low, age_high`` (a range, both or neither; the age error is measured from
    ``age`` when given, else the middle of the range; range coverage needs a range),
    optional; optional ``face_count`` (faces
    found, default 1 when detected) and ``error`` (the system's error code for
    an image it refused).

Similarities (verification protocol) -- one row per pair, either order:
    ``path_a, path_b, similarity`` (0-100; empty = no face in either image).

Search results (lineup protocol) -- one row per (probe, gallery image) match:
    ``probe, gallery, similarity``. A probe that was searched and matched
    nothing gets one row with ``gallery`` empty; a probe with no row at all is
    a missing prediction.

Paths. A relative path in the CSV is first resolved against ``root`` (default:
the CSV file's folder) and compared with the image paths the audit asks about.
If that finds nothing, it is matched as a *suffix* of those paths at a folder
boundary, so a CSV listing ``images/lfw/A/A_0001.jpg`` (paths relative to the
dataset root, the natural export) works wherever the CSV file lives. A suffix
that matches two different requested images is an error (use longer paths).
Absolute paths are compared as they are (after normalisation).

Anything the audit asks about that the file does not answer is a missing
prediction: Detection(face_count=0, error="MissingPrediction"), similarity None
or no matches, counted in ``describe()["missing"]`` (distinct images, pairs and
probes) -- a missing face counts as an error in the report, never silently.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from faceaudit.audit.targets.base import Detection, Match, Target

MISSING = "MissingPrediction"
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}
_GENDERS = {"female": "female", "f": "female", "woman": "female", "w": "female",
            "male": "male", "m": "male", "man": "male"}


def _norm(path: str) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def _number(value: str | None, what: str, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: {what} must be a number, got {value!r}") from None


class _PathIndex:
    """CSV path strings -> the requested path they name (see the module docstring)."""

    def __init__(self, base: Path):
        self.base = base

    def resolver(self, requested: Sequence[str]):
        exact = {_norm(p): p for p in requested}
        by_suffix: dict[tuple[str, ...], set[str]] = {}
        for p in requested:
            parts = PurePath(_norm(p)).parts
            for k in range(1, len(parts)):
                by_suffix.setdefault(parts[-k:], set()).add(p)

        def resolve(csv_path: str) -> str | None:
            if os.path.isabs(csv_path):
                return exact.get(_norm(csv_path))
            found = exact.get(_norm(str(self.base / csv_path)))
            if found is not None:
                return found
            parts = PurePath(os.path.normcase(os.path.normpath(csv_path))).parts
            candidates = by_suffix.get(tuple(parts), set())
            if len(candidates) > 1:
                raise ValueError(f"CSV path {csv_path!r} matches {len(candidates)} images "
                                 f"(e.g. {sorted(candidates)[:2]}); give longer paths")
            return next(iter(candidates), None)
        return resolve


class CsvTarget(Target):
    """Predictions from a CSV file (see the module docstring for columns and path rules)."""

    def __init__(self, path: str | os.PathLike, *, root: str | os.PathLike | None = None):
        self.path = Path(path)
        self.name = f"csv:{path}"
        self.root = Path(root) if root is not None else self.path.resolve().parent
        raw = self.path.read_bytes()
        self.sha256 = hashlib.sha256(raw).hexdigest()
        text = raw.decode("utf-8-sig")
        reader = csv.DictReader(text.splitlines())
        columns = {c.strip() for c in (reader.fieldnames or [])}
        self.kinds = [kind for kind, needed in (("detections", {"path"}), ("pairs", {"path_a", "path_b"}),
                                                 ("search", {"probe", "gallery"})) if needed <= columns]
        if not self.kinds:
            raise ValueError(f"{path}: no known columns (need path, or path_a/path_b/similarity, "
                             f"or probe/gallery/similarity); found {sorted(columns)}")
        self._detections: list[tuple[str, Detection]] = []
        self._pairs: list[tuple[str, str, float | None]] = []
        self._search: list[tuple[str, str | None, float | None]] = []
        for n, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            where = f"{path}, line {n}"
            if row.get("path"):
                self._detections.append((row["path"], self._detection(row, where)))
            if row.get("path_a") or row.get("path_b"):
                if not (row.get("path_a") and row.get("path_b")):
                    raise ValueError(f"{where}: a pair needs both path_a and path_b")
                self._pairs.append((row["path_a"], row["path_b"],
                                    _number(row.get("similarity"), "similarity", where)))
            if row.get("probe"):
                similarity = _number(row.get("similarity"), "similarity", where)
                if row.get("gallery") and similarity is None:
                    raise ValueError(f"{where}: a match needs a similarity")
                self._search.append((row["probe"], row.get("gallery") or None, similarity))
        self._paths = _PathIndex(self.root)
        self._missing: dict[str, set] = {"detections": set(), "pairs": set(), "probes": set()}

    @staticmethod
    def _detection(row: dict, where: str) -> Detection:
        error = row.get("error") or None
        flag = row.get("face_detected", "").lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"{where}: face_detected must be 1/0 or true/false, got {row['face_detected']!r}")
        if flag not in _TRUE:
            return Detection(face_count=0, error=error)
        count = _number(row.get("face_count"), "face_count", where)
        gender = row.get("gender", "").lower()
        if gender and gender not in _GENDERS:
            raise ValueError(f"{where}: unknown gender {row['gender']!r} (female/male)")
        age = _number(row.get("age"), "age", where)
        low = _number(row.get("age_low"), "age_low", where)
        high = _number(row.get("age_high"), "age_high", where)
        if (low is None) != (high is None):
            raise ValueError(f"{where}: an age range needs both age_low and age_high")
        if low is not None and high is not None and low > high:
            raise ValueError(f"{where}: age_low {low} is above age_high {high}")
        # A point age is not a range: the audit measures its error but no range coverage.
        return Detection(face_count=int(count) if count else 1, gender=_GENDERS.get(gender),
                         gender_confidence=_number(row.get("gender_confidence"), "gender_confidence", where),
                         age_low=low, age_high=high, error=error, age_estimate=age)

    def describe(self) -> dict:
        return {"kind": "csv", "name": self.name, "endpoint": None, "model_version": None,
                "path": str(self.path.resolve()), "sha256": self.sha256, "root": str(self.root),
                "rows": {"detections": len(self._detections), "pairs": len(self._pairs),
                         "search": len(self._search)},
                "missing": {kind: len(items) for kind, items in self._missing.items()}}

    def detect(self, paths: Sequence[str]) -> dict[str, Detection]:
        paths = list(dict.fromkeys(str(p) for p in paths))
        resolve = self._paths.resolver(paths)
        found: dict[str, Detection] = {}
        for csv_path, detection in self._detections:
            target = resolve(csv_path)
            if target is not None:
                found[target] = detection  # the last row for an image wins
        results = {}
        for p in paths:
            if p in found:
                results[p] = found[p]
            else:
                self._missing["detections"].add(p)
                results[p] = Detection(face_count=0, error=MISSING)
        return results

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        pairs = [(str(a), str(b)) for a, b in pairs]
        resolve = self._paths.resolver(list(dict.fromkeys(p for pair in pairs for p in pair)))
        known: dict[frozenset, float | None] = {}
        for a, b, similarity in self._pairs:
            ra, rb = resolve(a), resolve(b)
            if ra is not None and rb is not None:
                known[frozenset((ra, rb))] = similarity
        results: list[float | None] = []
        for a, b in pairs:
            key = frozenset((a, b))
            if key not in known:
                self._missing["pairs"].add(key)
            results.append(known.get(key))
        return results

    def search(self, gallery: Sequence[str], probes: Sequence[str], max_results: int = 50
               ) -> dict[str, list[Match]]:
        gallery = list(dict.fromkeys(str(p) for p in gallery))
        probes = list(dict.fromkeys(str(p) for p in probes))
        in_gallery = set(gallery)
        resolve = self._paths.resolver(list(dict.fromkeys(gallery + probes)))
        seen: set[str] = set()
        matches: dict[str, dict[str, float]] = {}
        for probe, match, similarity in self._search:
            rp = resolve(probe)
            if rp is None:
                continue
            seen.add(rp)
            rm = resolve(match) if match else None
            if rm is not None and rm in in_gallery and similarity is not None:  # a match has one (checked on load)
                best = matches.setdefault(rp, {})
                best[rm] = max(similarity, best.get(rm, float("-inf")))
        results: dict[str, list[Match]] = {}
        for probe in probes:
            if probe not in seen:
                self._missing["probes"].add(probe)
            found = sorted(matches.get(probe, {}).items(), key=lambda item: -item[1])[:max_results]
            results[probe] = [Match(path=p, similarity=s) for p, s in found]
        return results
