"""faceaudit's 0-100 similarity: a documented, calibrated function of embedding distance.

Rekognition's similarity is an opaque number. Ours is a monotone, piecewise-linear
map from Euclidean embedding distance to 0-100 through anchor points that were
chosen on a reference set so that a threshold has a known false match rate
(docs/similarity.md). The anchors and their provenance ship as data
(faceaudit/data/similarity_calibration[_<engine>].json, one per engine), written by
scripts/calibrate_similarity.py.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

CALIBRATION_FILE = "similarity_calibration.json"  # the dlib engine's (model 1.0); sface: ..._sface.json
# Written by benchmarks/faces_dev_accuracy.py: the dlib engine's table (its first engine), and
# one group_false_match_rates_<engine>.json per other engine; each names its model_version.
GROUP_FMR_PATTERN = "group_false_match_rates*.json"


@dataclass(frozen=True)
class SimilarityScale:
    """Distance -> similarity through ``anchors`` [(distance, similarity), ...].

    Anchors must start at (0, 100), have increasing distances and decreasing
    similarities, and end at similarity 0; beyond the last anchor it stays 0.
    """

    anchors: tuple[tuple[float, float], ...]
    model_version: str
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        distances = [d for d, _ in self.anchors]
        similarities = [s for _, s in self.anchors]
        if self.anchors[0] != (0.0, 100.0) or similarities[-1] != 0.0:
            raise ValueError("anchors must run from (0, 100) to similarity 0")
        if np.any(np.diff(distances) <= 0) or np.any(np.diff(similarities) >= 0):
            raise ValueError("anchor distances must increase and similarities decrease")

    def similarity(self, distance):
        """Similarity (0-100) for a distance or an array of them."""
        distances = np.array([d for d, _ in self.anchors])
        similarities = np.array([s for _, s in self.anchors])
        return np.interp(distance, distances, similarities)

    def distance(self, similarity: float) -> float:
        """The largest distance whose similarity is at least ``similarity``."""
        distances = np.array([d for d, _ in self.anchors])
        similarities = np.array([s for _, s in self.anchors])
        return float(np.interp(similarity, similarities[::-1], distances[::-1]))

    def threshold_note(self, threshold: float) -> str:
        """One sentence on what a threshold means for false matches, by group (measured, shipped data)."""
        measured = GroupFalseMatchRates.for_model_version(self.model_version)
        rates = None if measured is None else measured.thresholds.get(f"{threshold:g}")
        if not rates:
            return (f"Similarity {threshold:g} is distance {self.distance(threshold):.3f}; false match rates by "
                    "group are measured for thresholds 80, 95 and 99 (`faceaudit thresholds`).")
        low = min(rates, key=lambda g: rates[g]["rate"])
        high = max(rates, key=lambda g: rates[g]["rate"])

        def show(group: str) -> str:
            r = rates[group]
            return f"{r['rate']:.2%} [{r['ci95'][0]:.2%}, {r['ci95'][1]:.2%}] ({group})"

        return (f"At similarity {threshold:g}, strangers of the same gender and race were matched {show(low)} "
                f"to {show(high)} of the time on UTKFace research photos: the false match rate depends on "
                "who is searched (`faceaudit thresholds`, docs/similarity.md).")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimilarityScale:
        return cls(
            anchors=tuple((float(d), float(s)) for d, s in data["anchors"]),
            model_version=data["model_version"],
            provenance=data.get("provenance", {}),
        )

    @classmethod
    def shipped(cls, file_name: str, model_version: str | None = None) -> SimilarityScale:
        """A calibration shipped in faceaudit/data (each engine names its own). With
        ``model_version``, RuntimeError unless the file was calibrated for that model."""
        scale = cls.from_dict(json.loads((resources.files("faceaudit") / "data" / file_name).read_text()))
        if model_version is not None and scale.model_version != model_version:
            raise RuntimeError(f"{file_name} is for model {scale.model_version}, not {model_version}: "
                               f"rerun scripts/calibrate_similarity.py --engine for it")
        return scale



@dataclass(frozen=True)
class GroupFalseMatchRates:
    """Measured within-group false match rates of an engine at thresholds 80, 95 and 99.

    ``thresholds``: {"80": {"female Asian": {"rate", "k", "n", "ci95", ...}, ...}, ...}.
    """

    model_version: str
    thresholds: dict[str, dict[str, dict[str, Any]]]
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupFalseMatchRates:
        return cls(data["model_version"], data["thresholds"], data.get("provenance", {}))

    @classmethod
    def for_model_version(cls, model_version: str) -> GroupFalseMatchRates | None:
        """The shipped table measured on the engine with this model_version; None if none was.

        Found by the model_version each file records, so a table can never be shown for
        an engine it was not measured on."""
        data_dir = resources.files("faceaudit") / "data"
        names = sorted(entry.name for entry in data_dir.iterdir()
                       if fnmatch.fnmatch(entry.name, GROUP_FMR_PATTERN))
        for name in names:
            data = json.loads((data_dir / name).read_text())
            if data.get("model_version") == model_version:
                return cls.from_dict(data)
        return None
