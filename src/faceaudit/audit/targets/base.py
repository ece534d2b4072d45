"""The system under audit, used black-box through one interface.

An audit asks a target three kinds of question, which are what Rekognition-like
services answer and what the three protocols need:

- detect(paths): for each image, did it find a face, and what gender and age did
  it say for the largest one (DetectFaces with Attributes=ALL);
- similarities(pairs): for each pair of images, the similarity (0-100) between
  their largest faces, or None where either image had no face (IndexFaces +
  SearchFaces, so each image is analysed once, not once per pair);
- search(gallery, probes): for each probe image, the gallery images whose face
  it matched, with similarities, best first (IndexFaces + SearchFacesByImage):
  the ACLU's lineup.

Implementations (this package): the local engine in worker processes and any
Rekognition-compatible endpoint (rekognition.py), and a CSV of predictions
(csv_predictions.py). This module holds only the interface and its answers, so
that every implementation imports it and it imports none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Detection:
    """What a target said about one image (its largest face)."""

    face_count: int
    gender: str | None = None  # "female" / "male" (lower case, as AuditImage.gender)
    gender_confidence: float | None = None  # 0-100
    age_low: float | None = None  # the target's age range (Rekognition's AgeRange), inclusive
    age_high: float | None = None
    error: str | None = None  # the target's error code when it refused the image
    # A point estimate the target gave besides or instead of a range (a CSV's age column).
    age_estimate: float | None = None

    @property
    def found(self) -> bool:
        return self.face_count > 0

    @property
    def age(self) -> float | None:
        """Point estimate: the target's own when it gave one, else the middle of the range."""
        if self.age_estimate is not None:
            return self.age_estimate
        if self.age_low is None or self.age_high is None:
            return None
        return (self.age_low + self.age_high) / 2.0

    @property
    def has_age_range(self) -> bool:
        return self.age_low is not None and self.age_high is not None


@dataclass(frozen=True)
class Match:
    path: str  # gallery image
    similarity: float  # 0-100


class Target(ABC):
    """A face system under audit."""

    #: e.g. "local", "rekognition://127.0.0.1:8000", "csv:predictions.csv"
    name: str

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the report records about the target (kind, endpoint, model version, ...)."""

    @abstractmethod
    def detect(self, paths: Sequence[str]) -> dict[str, Detection]:
        ...

    @abstractmethod
    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        ...

    @abstractmethod
    def search(self, gallery: Sequence[str], probes: Sequence[str], max_results: int = 50
               ) -> dict[str, list[Match]]:
        ...

    def close(self) -> None:  # noqa: B027 (optional: a target without resources has nothing to release)
        """Release what the target holds (temporary collections, worker processes)."""
