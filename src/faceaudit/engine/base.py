"""The FaceEngine interface: what every face backend provides.

An engine does three things to a decoded image (see faceaudit.images):
``detect`` finds faces, ``embed`` turns each into a vector, ``analyze`` estimates
age and gender. Everything above it (the Rekognition operations, the audit)
talks to this interface only, so a backend can be swapped without touching them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from faceaudit.images import LoadedImage
    from faceaudit.similarity import SimilarityScale

# Rekognition's names for the five landmarks every backend must report,
# in image coordinates: "Left" means the left side of the picture.
LANDMARK_NAMES = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between rows of ``a`` (n, d) and of ``b`` (m, d; default ``a``): (n, m)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = a if b is None else np.atleast_2d(np.asarray(b, dtype=np.float64))
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class DetectedFace:
    """One face found in an image, in pixel coordinates of that image."""

    left: float
    top: float
    right: float
    bottom: float
    confidence: float  # 0..1, the detector's own score
    landmarks: dict[str, tuple[float, float]]  # LANDMARK_NAMES -> (x, y)
    # Backend-private data the same backend needs again in embed/analyze
    # (e.g. its alignment landmarks); never part of a response.
    alignment: Any = field(default=None, compare=False, repr=False)

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


@dataclass(frozen=True)
class FaceAttributes:
    """Estimated demographic attributes of one face."""

    age: float  # expected age, years
    age_low: int  # central 68% of the model's age distribution
    age_high: int
    gender: str  # "Male" or "Female", Rekognition's values
    gender_confidence: float  # 0..100


class FaceEngine(ABC):
    """A face detection, embedding and attribute backend."""

    #: Stable identifier of the models in use; stored with every indexed face
    #: (Rekognition's FaceModelVersion) because vectors from different models
    #: must never be compared.
    model_version: str
    #: Turns a distance between two of this engine's embeddings into 0-100.
    similarity_scale: "SimilarityScale"
    #: Optional fair score normalization (faceaudit.fairness): shifts distances by
    #: the two faces' cluster offsets before they become similarities.
    score_normalization = None

    @abstractmethod
    def detect(self, image: "LoadedImage", max_faces: int = 100) -> list[DetectedFace]:
        """Faces in the image, largest first, at most ``max_faces``."""

    @abstractmethod
    def embed(self, image: "LoadedImage", faces: list[DetectedFace]) -> np.ndarray:
        """One embedding row per face, float32, shape (len(faces), dim)."""

    @abstractmethod
    def analyze(self, image: "LoadedImage", faces: list[DetectedFace]) -> list[FaceAttributes]:
        """Age and gender estimates, one per face."""

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances between embeddings ``a`` (n, d) and ``b`` (m, d), normalized if configured: (n, m)."""
        raw = pairwise_distances(a, b)
        if self.score_normalization is None:
            return raw
        return np.maximum(self.score_normalization.normalize(raw, np.atleast_2d(a), np.atleast_2d(b)), 0.0)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity (0-100) between embeddings ``a`` (n, d) and ``b`` (m, d): (n, m)."""
        return self.similarity_scale.similarity(self.distances(a, b))

    def options(self) -> dict:
        """What, beyond model_version, changes this engine's answers (recorded in audit reports)."""
        return {}
