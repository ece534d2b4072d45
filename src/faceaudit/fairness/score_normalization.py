"""Fair score normalization: narrow false-match-rate gaps without asking anyone's race or gender.

In the spirit of Terhörst, Kolf, Damer, Kirchbuchner and Kuijper, "Post-comparison
mitigation of demographic bias in face recognition using fair score
normalization" (Pattern Recognition Letters, 2020). Faces are grouped without
labels, by k-means on their embeddings; each cluster gets the distance at which
its own impostor pairs reach a target false match rate; a comparison's distance
is then shifted by how far its two faces' cluster thresholds sit from the global
one:

    d' = d - (delta(a) + delta(b)) / 2,   delta(c) = threshold(c) - threshold(global)

A cluster whose strangers look alike to the model (small impostor distances,
hence a small threshold) gets its distances stretched, so one threshold means
closer to the same false match rate for everyone. Nobody's demographic label is
used, in training or at search time; the clusters are whatever the embedding
space holds.

Choices of ours, not the paper's: distances (not cosine similarities); a
cluster's threshold comes from impostor pairs with both faces in the cluster
(the "same kind of face" pairs that drive the gaps); a cluster with too few such
pairs to estimate its threshold keeps delta 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.vectors import pairwise_distances

FORMAT = "faceaudit-fair-score-normalization/1"


def impostor_mask(n: int, identities=None) -> np.ndarray:
    """Upper-triangle pairs (i < j) of different identities; no identities: every image is its own."""
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    if identities is None:
        return upper
    identities = np.asarray(identities, dtype=object)
    return upper & (identities[:, None] != identities[None, :])


@dataclass(frozen=True)
class FairScoreNormalization:
    centroids: np.ndarray  # (k, dim)
    offsets: np.ndarray  # (k,) delta per cluster, in distance units
    target_fmr: float
    global_threshold: float
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def fit(cls, embeddings: np.ndarray, identities=None, *, n_clusters: int = 10, target_fmr: float = 0.01,
            min_pairs: int | None = None, seed: int = 0, provenance: dict | None = None
            ) -> FairScoreNormalization:
        """Learn clusters and their thresholds from embeddings of a training set.

        ``identities`` (one per embedding) keeps genuine pairs out of the impostor
        set; without them every embedding counts as a different person.
        ``min_pairs`` (default 10 / target_fmr) is the fewest within-cluster
        impostor pairs needed to trust a cluster's threshold.
        """
        from sklearn.cluster import KMeans

        embeddings = np.asarray(embeddings, dtype=np.float64)
        if len(embeddings) < 2 * n_clusters:
            raise ValueError(f"need at least {2 * n_clusters} embeddings for {n_clusters} clusters")
        min_pairs = int(np.ceil(10 / target_fmr)) if min_pairs is None else min_pairs
        kmeans = KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit(embeddings)
        labels = kmeans.labels_
        distances = pairwise_distances(embeddings)
        impostors = impostor_mask(len(embeddings), identities)
        global_threshold = float(np.quantile(distances[impostors], target_fmr))
        offsets = np.zeros(n_clusters)
        pairs_per_cluster = []
        for c in range(n_clusters):
            members = labels == c
            within = impostors & members[:, None] & members[None, :]
            pairs_per_cluster.append(int(within.sum()))
            if within.sum() >= min_pairs:
                offsets[c] = float(np.quantile(distances[within], target_fmr)) - global_threshold
        record = {"n_embeddings": len(embeddings), "n_clusters": n_clusters, "seed": seed,
                  "min_pairs": min_pairs, "pairs_per_cluster": pairs_per_cluster,
                  "cluster_sizes": np.bincount(labels, minlength=n_clusters).tolist(),
                  **(provenance or {})}
        return cls(kmeans.cluster_centers_, offsets, float(target_fmr), global_threshold, record)

    def clusters(self, embeddings: np.ndarray) -> np.ndarray:
        """Nearest cluster of each embedding."""
        return pairwise_distances(np.atleast_2d(embeddings), self.centroids).argmin(1)

    def delta(self, embeddings: np.ndarray) -> np.ndarray:
        return self.offsets[self.clusters(embeddings)]

    def normalize(self, distances: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Normalized distances between embeddings ``a`` (n, d) and ``b`` (m, d), given their raw (n, m)."""
        return np.asarray(distances) - 0.5 * (self.delta(a)[:, None] + self.delta(b)[None, :])

    def max_reduction(self, query: np.ndarray) -> float:
        """An upper bound on how much normalizing shrinks the distance from any row of ``query``
        to any face: half the largest query offset plus half the largest positive cluster offset.
        A search widens its radius by this much, then rescores (faceaudit.scoring)."""
        return 0.5 * (float(self.delta(np.atleast_2d(query)).max()) + max(float(self.offsets.max()), 0.0))

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        return self.normalize(pairwise_distances(a, b), a, b)

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "target_fmr": self.target_fmr, "global_threshold": self.global_threshold,
                "centroids": self.centroids.tolist(), "offsets": self.offsets.tolist(),
                "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FairScoreNormalization:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        return cls(np.asarray(data["centroids"], dtype=np.float64), np.asarray(data["offsets"], dtype=np.float64),
                   float(data["target_fmr"]), float(data["global_threshold"]), data.get("provenance", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FairScoreNormalization:
        return cls.from_dict(json.loads(Path(path).read_text()))
