"""Resumable bookkeeping of the Rekognition target: what each cached answer is keyed by.

A *run* is the ordered list of distinct image contents (SHA-256) that one
similarities() or search() call indexes, under the target's fingerprint; the
run's collection, each image's IndexFaces outcome and each search response are
cached under keys derived from it (see rekognition.py for how a rerun uses them,
cache.py for the store). Also here: reading the answers that get cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faceaudit.audit.targets.base import Detection
from faceaudit.audit.targets.cache import cache_key, file_sha256

SEARCH_MAX_FACES = 4096  # Rekognition's maximum MaxFaces for SearchFaces
DETECT_REQUEST = {"Attributes": ["ALL"]}
INDEX_REQUEST = {"MaxFaces": 1, "QualityFilter": "NONE"}
RUN_VERSION = "faceaudit-run-v1"


def target_fingerprint(kind: str, endpoint: str, model_version: str) -> str:
    """What cached answers are valid for: the endpoint and its model version (and, for the local
    engine, this package's version and its shipped AgeRange calibration, which change answers
    without a new model version)."""
    parts = [kind, endpoint, model_version]
    if kind == "local":
        from faceaudit import __version__
        from faceaudit.engine.age_interval import shipped_age_interval
        parts += [__version__, shipped_age_interval().digest]
    return cache_key(*parts)


def detect_key(engine_fingerprint: str, sha256: str) -> str:
    """The cache key of one image's DetectFaces (Attributes ALL) response."""
    return cache_key(engine_fingerprint, "DetectFaces", sha256, DETECT_REQUEST)


def detection_from_response(value: dict[str, Any]) -> Detection:
    """Detection of the largest face (by BoundingBox area) of a DetectFaces response."""
    if "Error" in value:
        return Detection(face_count=0, error=value["Error"].get("Code") or "Unknown")
    faces = value.get("FaceDetails") or []
    if not faces:
        return Detection(face_count=0)

    def area(detail: dict[str, Any]) -> float:
        box = detail.get("BoundingBox") or {}
        return float(box.get("Width") or 0.0) * float(box.get("Height") or 0.0)

    largest = max(faces, key=area)  # max keeps the first of equal areas
    gender = largest.get("Gender") or {}
    age = largest.get("AgeRange") or {}
    value_ = gender.get("Value")
    return Detection(
        face_count=len(faces),
        gender=value_.lower() if isinstance(value_, str) else None,
        gender_confidence=None if gender.get("Confidence") is None else float(gender["Confidence"]),
        age_low=None if age.get("Low") is None else float(age["Low"]),
        age_high=None if age.get("High") is None else float(age["High"]),
    )


def search_matches(response: dict[str, Any]) -> list[list[Any]]:
    """[[ExternalImageId, Similarity], ...] of a search response, in its order."""
    return [[m.get("Face", {}).get("ExternalImageId"), float(m["Similarity"])]
            for m in response.get("FaceMatches", [])]


class Run:
    """The distinct images one similarities() or search() call indexes, named by content.

    ``fingerprint`` names the engine that indexes them (no scoring options: the faces
    indexed stay valid when only those change); ``scoring`` names what the search
    answers also depend on (default: the same)."""

    def __init__(self, fingerprint: str, kind: str, paths: Sequence[str], scoring: str | None = None):
        self.scoring = fingerprint if scoring is None else scoring
        self.paths = list(dict.fromkeys(paths))
        self.position = {p: i for i, p in enumerate(self.paths)}
        self.shas: list[str | None] = []
        for path in self.paths:
            try:
                self.shas.append(file_sha256(path))
            except OSError:
                self.shas.append(None)
        self.key = cache_key(RUN_VERSION, fingerprint, kind, self.shas, INDEX_REQUEST)

    @staticmethod
    def external_id(i: int) -> str:
        return f"i{i}"

    @staticmethod
    def index_of(external_id: str | None) -> int | None:
        if isinstance(external_id, str) and external_id.startswith("i") and external_id[1:].isdigit():
            return int(external_id[1:])
        return None

    def collection_key(self) -> str:
        return cache_key(self.key, "collection")

    def index_key(self, i: int) -> str:
        return cache_key(self.key, "IndexFaces", i)

    def search_key(self, i: int, partners: Sequence[int]) -> str:
        return cache_key(self.key, self.scoring, "SearchFaces", i, SEARCH_MAX_FACES, list(partners))

    def probe_key(self, sha256: str, max_results: int) -> str:
        return cache_key(self.key, self.scoring, "SearchFacesByImage", sha256, max_results)
