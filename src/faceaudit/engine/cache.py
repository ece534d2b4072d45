"""An engine wrapper that remembers results per image, for runs that see the same image many times.

Pair and lineup evaluations compare each image with many others; the engine
is deterministic, so detecting and embedding an image once per run is enough.
Results are keyed by the image's SHA-256 and kept in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from faceaudit.engine.base import DetectedFace, FaceAttributes, FaceEngine

if TYPE_CHECKING:
    from faceaudit.images import LoadedImage
    from faceaudit.similarity import SimilarityScale

_FaceKey = tuple[str, float, float, float, float]
_Result = TypeVar("_Result")


def _fill_missing(cache: dict[_FaceKey, _Result], keys: list[_FaceKey], faces: list[DetectedFace],
                  compute: Callable[[list[DetectedFace]], Sequence[_Result]]) -> None:
    """Compute, in one call, the results of the faces whose keys are not cached yet."""
    missing = [i for i, key in enumerate(keys) if key not in cache]
    if missing:
        for i, result in zip(missing, compute([faces[i] for i in missing])):
            cache[keys[i]] = result


class CachingEngine(FaceEngine):
    def __init__(self, engine: FaceEngine):
        self.engine = engine
        self.model_version = engine.model_version
        self._faces: dict[str, list[DetectedFace]] = {}
        self._vectors: dict[_FaceKey, np.ndarray] = {}
        self._attributes: dict[_FaceKey, FaceAttributes] = {}

    @property
    def similarity_scale(self) -> SimilarityScale:
        return self.engine.similarity_scale

    def options(self) -> dict[str, Any]:
        return self.engine.options()

    def detect(self, image: LoadedImage, max_faces: int = 100) -> list[DetectedFace]:
        if image.sha256 not in self._faces:
            self._faces[image.sha256] = self.engine.detect(image, max_faces=100)
        return self._faces[image.sha256][:max_faces]

    def _keys(self, image: LoadedImage, faces: list[DetectedFace]) -> list[_FaceKey]:
        return [(image.sha256, face.left, face.top, face.right, face.bottom) for face in faces]

    def embed(self, image: LoadedImage, faces: list[DetectedFace]) -> np.ndarray:
        if not faces:  # the engine's own empty array (its dimension and dtype)
            return self.engine.embed(image, [])
        keys = self._keys(image, faces)
        _fill_missing(self._vectors, keys, faces, lambda todo: list(self.engine.embed(image, todo)))
        return np.stack([self._vectors[key] for key in keys])

    def analyze(self, image: LoadedImage, faces: list[DetectedFace]) -> list[FaceAttributes]:
        keys = self._keys(image, faces)
        _fill_missing(self._attributes, keys, faces, lambda todo: self.engine.analyze(image, todo))
        return [self._attributes[key] for key in keys]
