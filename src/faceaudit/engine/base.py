"""The FaceEngine interface: what every face backend provides.

An engine does three things to a decoded image (see faceaudit.images):
``detect`` finds faces, ``embed`` turns each into a vector, ``analyze`` estimates
age and gender. Everything above it (the Rekognition operations, the audit)
talks to this interface only, so a backend can be swapped without touching them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from faceaudit.images import LoadedImage
    from faceaudit.similarity import SimilarityScale

# Rekognition's names for the five landmarks every backend must report,
# in image coordinates: "Left" means the left side of the picture.
LANDMARK_NAMES = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


class EmbeddingClassifier(Protocol):
    """A classifier on an engine's embeddings that can stand in for one of its attribute
    networks (faceaudit.fairness.AttributeHead is one); the engine needs no more of it."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def provenance(self) -> dict[str, Any]: ...

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, len(classes)) class probabilities."""
        ...


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
    age_low: int  # a calibrated ~90% prediction interval around ``age``, whole years,
    age_high: int  # inclusive (faceaudit.engine.age_interval)
    gender: str  # "Male" or "Female", Rekognition's values
    gender_confidence: float  # 0..100


class FaceEngine(ABC):
    """A face detection, embedding and attribute backend."""

    #: Stable identifier of the models in use; stored with every indexed face
    #: (Rekognition's FaceModelVersion) because vectors from different models
    #: must never be compared.
    model_version: str

    @property
    @abstractmethod
    def similarity_scale(self) -> SimilarityScale:
        """Turns a distance between two of this engine's embeddings into 0-100: each backend
        calibrates its own. faceaudit.scoring.Scoring is what compares faces (this scale plus
        any score normalization); the engine only embeds them."""

    @abstractmethod
    def detect(self, image: LoadedImage, max_faces: int = 100) -> list[DetectedFace]:
        """Faces in the image, largest first, at most ``max_faces``."""

    @abstractmethod
    def embed(self, image: LoadedImage, faces: list[DetectedFace]) -> np.ndarray:
        """One embedding row per face, float32, shape (len(faces), dim)."""

    @abstractmethod
    def analyze(self, image: LoadedImage, faces: list[DetectedFace]) -> list[FaceAttributes]:
        """Age and gender estimates, one per face."""

    def options(self) -> dict[str, Any]:
        """What, beyond model_version, changes this engine's answers (recorded in audit reports)."""
        return {}
