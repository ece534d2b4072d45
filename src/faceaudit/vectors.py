"""Arithmetic on embedding vectors shared by every layer (engine, fairness, scoring, scripts).

numpy only, no faceaudit imports: the bottom of the layering, so that anything
that measures distances can use it without importing what sits above it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def pairwise_distances(a: ArrayLike, b: ArrayLike | None = None) -> np.ndarray:
    """Euclidean distances between rows of ``a`` (n, d) and of ``b`` (m, d; default ``a``): (n, m), float64."""
    left = np.atleast_2d(np.asarray(a, dtype=np.float64))
    right = left if b is None else np.atleast_2d(np.asarray(b, dtype=np.float64))
    squared = (left * left).sum(1)[:, None] + (right * right).sum(1)[None, :] - 2.0 * left @ right.T
    return np.sqrt(np.maximum(squared, 0.0))
