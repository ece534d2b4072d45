"""AgeRange as a calibrated prediction interval around the age network's expected age.

The age network's own distribution is far too confident to be a range: its central
68% held the true age of about 30% of faces-dev's check half (docs/engine.md). The
range is instead the expected age plus or minus a half-width read from a table
(faceaudit/data/age_interval_calibration.json, written by
scripts/calibrate_age_interval.py on faces-dev's calibration half only): faces are
binned by expected age, because errors grow with age, and each bin's half-width is
the 90th percentile of |true age - expected age| among the calibration faces in it.
Symmetric, so the range's middle stays the expected age (audits read the middle as
the point estimate). Standard library only: the audit fingerprints the table without
importing any network runtime.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.resources
import json
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

CALIBRATION_FILE = "age_interval_calibration.json"


@dataclass(frozen=True)
class AgeInterval:
    """Half-widths by bin of expected age: bin i holds ages in [edges[i-1], edges[i])."""

    coverage: float  # nominal share of faces whose true age falls in the range
    edges: tuple[float, ...]  # ascending; len(half_widths) - 1 of them
    half_widths: tuple[float, ...]
    digest: str  # of the table's file: what audit caches and reports key on
    provenance: dict[str, Any]

    def __post_init__(self) -> None:
        if len(self.half_widths) != len(self.edges) + 1 or list(self.edges) != sorted(self.edges):
            raise ValueError("age interval table: need ascending edges and one more half-width than edges")
        if any(w < 0 for w in self.half_widths):
            raise ValueError("age interval table: half-widths must be non-negative")

    def half_width(self, expected_age: float) -> float:
        return self.half_widths[bisect.bisect_right(self.edges, expected_age)]

    def range_for(self, expected_age: float) -> tuple[int, int]:
        """(Low, High), whole years as Rekognition gives them, inclusive, Low >= 0."""
        width = self.half_width(expected_age)
        # Round half up (not to even): a range must not change with the parity of a bound.
        low = max(0, math.floor(expected_age - width + 0.5))
        high = max(low, math.floor(expected_age + width + 0.5))
        return low, high

    @classmethod
    def from_dict(cls, table: dict[str, Any], digest: str = "") -> AgeInterval:
        return cls(coverage=float(table["coverage"]), edges=tuple(float(e) for e in table["edges"]),
                   half_widths=tuple(float(w) for w in table["half_widths"]), digest=digest,
                   provenance=dict(table.get("provenance", {})))


@cache
def shipped_age_interval() -> AgeInterval:
    """The table shipped in faceaudit/data (read once per process)."""
    raw = (importlib.resources.files("faceaudit") / "data" / CALIBRATION_FILE).read_bytes()
    return AgeInterval.from_dict(json.loads(raw), hashlib.sha256(raw).hexdigest()[:12])
