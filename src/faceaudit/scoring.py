"""Scoring: how two embeddings become a distance and a 0-100 similarity, for every path that compares faces.

One object holds the two things that decide a comparison's score: the engine's
calibrated SimilarityScale (distance <-> similarity) and an optional score
normalization (faceaudit.fairness) that shifts each distance by where its two
faces sit in embedding space. CompareFaces, SearchFaces(ByImage),
SearchUsers(ByImage) and AssociateFaces' UserMatchThreshold all go through one
``Scoring``, so a normalization can never apply to one of them and not another.

The engine supplies its own scale (``FaceEngine.similarity_scale``: each
backend calibrates its own); ``Scoring.for_engine`` composes it with a
normalization, and faceaudit.runtime makes the one Scoring per engine that the
environment asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from faceaudit.similarity import SimilarityScale
from faceaudit.vectors import pairwise_distances

if TYPE_CHECKING:
    from faceaudit.engine.base import FaceEngine


class ScoreNormalization(Protocol):
    """What Scoring needs of a normalization (faceaudit.fairness.FairScoreNormalization is one)."""

    @property
    def provenance(self) -> dict[str, Any]: ...

    def normalize(self, distances: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Normalized (n, m) distances between rows of ``a`` and ``b``, given their raw ones."""
        ...

    def max_reduction(self, query: np.ndarray) -> float:
        """The most that normalizing can shrink the distance from any row of ``query`` to any face."""
        ...


@dataclass(frozen=True)
class Scoring:
    """Distances and similarities of one engine's embeddings, normalized when ``normalization`` is set."""

    scale: SimilarityScale
    normalization: ScoreNormalization | None = None

    @classmethod
    def for_engine(cls, engine: FaceEngine, normalization: ScoreNormalization | None = None) -> Scoring:
        return cls(engine.similarity_scale, normalization)

    @property
    def normalized(self) -> bool:
        return self.normalization is not None

    # -- distances ----------------------------------------------------------------------
    def distances(self, a: ArrayLike, b: ArrayLike) -> np.ndarray:
        """Distances between embeddings ``a`` (n, d) and ``b`` (m, d): (n, m), never below 0."""
        left, right = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
        raw = pairwise_distances(left, right)
        if self.normalization is None:
            return raw
        return np.maximum(self.normalization.normalize(raw, left, right), 0.0)

    def search_radius(self, query: ArrayLike, max_distance: float | None) -> float | None:
        """The raw (Euclidean) radius around ``query`` rows that holds every face within
        ``max_distance`` in this scoring's distance: what to ask a store for before rescoring."""
        if max_distance is None or self.normalization is None:
            return max_distance
        reduction = self.normalization.max_reduction(np.atleast_2d(np.asarray(query, np.float64)))
        return max_distance + max(reduction, 0.0)

    # -- similarity ---------------------------------------------------------------------
    def similarities(self, a: ArrayLike, b: ArrayLike) -> np.ndarray:
        """Similarity (0-100) between embeddings ``a`` (n, d) and ``b`` (m, d): (n, m)."""
        return np.asarray(self.scale.similarity(self.distances(a, b)), dtype=np.float64)

    def similarity(self, distance: float) -> float:
        """The similarity (0-100) of one distance in this scoring."""
        return float(self.scale.similarity(distance))

    def max_distance(self, threshold: float) -> float | None:
        """The largest distance whose similarity still reaches ``threshold``; None (any) for 0."""
        return None if threshold == 0.0 else self.scale.distance(threshold)

    def options(self) -> dict[str, Any]:
        """What, beyond the engine, changes scores (recorded in audit reports)."""
        return {} if self.normalization is None else {"score_normalization": self.normalization.provenance}
