"""Training a gender head or a score normalization from a labelled image set.

Both run the default engine over the images once (all cores), keep the largest
face of each, and fit on the embeddings. ``where`` keeps only images whose
group values match (e.g. {"half": "calibration"} on faces-dev), so training and
evaluation can use disjoint parts of one dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from faceaudit.datasets.labelled import AuditDataset, AuditImage
from faceaudit.engine.batch import analyze_files
from faceaudit.fairness.attribute_head import AttributeHead
from faceaudit.fairness.score_normalization import FairScoreNormalization
from faceaudit.settings import Settings


def select(dataset: AuditDataset, where: Mapping[str, str] | None = None) -> list[AuditImage]:
    images = dataset.images
    for key, value in (where or {}).items():
        images = [image for image in images if image.group(key) == value]
    if not images:
        raise ValueError(f"no image of {dataset.name} matches {dict(where or {})}")
    return images


# Largest-face embedding (or None: no face) per (engine, image path), kept for the process's
# life: training a head and a normalization on the same images embeds them once. The engine is
# part of the key because one process may train for several (FACEAUDIT_ENGINE changed between).
_embedded: dict[tuple[str, str], np.ndarray | None] = {}


def training_engine() -> str:
    """The engine whose embeddings training uses: the one FACEAUDIT_ENGINE names (analyze_files'
    workers build it); recorded in what is trained, so it is never applied to another engine's."""
    return Settings.from_env().engine


def embeddings_of(images: Sequence[AuditImage]) -> tuple[list[AuditImage], np.ndarray]:
    """The images in which a face was found, and the embedding of each one's largest face."""
    engine = training_engine()
    missing = [image.path for image in images if (engine, image.path) not in _embedded]
    if missing:
        for path, result in zip(missing, analyze_files(missing, description="Embedding faces")):
            _embedded[engine, path] = result.embedding if result.detected else None
    kept = [image for image in images if _embedded[engine, image.path] is not None]
    return kept, np.array([_embedded[engine, image.path] for image in kept], dtype=np.float64)


def train_attribute_head(dataset: AuditDataset, *, label: str = "gender",
                         balance_by: Sequence[str] = ("gender", "race"), where: Mapping[str, str] | None = None,
                         seed: int = 0) -> AttributeHead:
    """A head predicting ``label`` (an AuditImage group key), trained on images that carry it,
    with every combination of ``balance_by`` values subsampled to the same size."""
    images = [image for image in select(dataset, where) if image.group(label) is not None]
    images = [image for image in images if all(image.group(key) is not None for key in balance_by)]
    if not images:
        raise ValueError(f"no image carries {label} and {', '.join(balance_by)}")
    images, vectors = embeddings_of(images)
    groups = [tuple(image.group(key) for key in balance_by) for image in images] if balance_by else None
    labels = [image.group(label) or "" for image in images]  # never "": images without it were dropped
    return AttributeHead.fit(vectors, labels, label=label,
                             balance_by=groups, seed=seed,
                             provenance={"dataset": dataset.name, "where": dict(where or {}),
                                         "balanced_by": list(balance_by), "engine": training_engine()})


def train_score_normalization(dataset: AuditDataset, *, clusters: int = 10, target_fmr: float = 0.01,
                              where: Mapping[str, str] | None = None, seed: int = 0) -> FairScoreNormalization:
    """Clusters and their thresholds from a dataset's faces; demographic labels are not used.
    Identities, where the dataset has them, keep genuine pairs out of the impostor set."""
    images, vectors = embeddings_of(select(dataset, where))
    identities = [image.identity if image.identity else f"#{i}" for i, image in enumerate(images)]
    return FairScoreNormalization.fit(vectors, identities, n_clusters=clusters, target_fmr=target_fmr, seed=seed,
                                      provenance={"dataset": dataset.name, "where": dict(where or {}),
                                                  "engine": training_engine()})
