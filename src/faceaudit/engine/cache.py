"""An engine wrapper that remembers results per image, for runs that see the same image many times.

Pair and lineup evaluations compare each image with many others; the engine
is deterministic, so detecting and embedding an image once per run is enough.
Results are keyed by the image's SHA-256 and kept in memory.
"""

from __future__ import annotations

import numpy as np

from faceaudit.engine.base import DetectedFace, FaceAttributes, FaceEngine


class CachingEngine(FaceEngine):
    def __init__(self, engine: FaceEngine):
        self.engine = engine
        self.model_version = engine.model_version
        self._faces: dict[str, list[DetectedFace]] = {}
        self._vectors: dict[tuple, np.ndarray] = {}
        self._attributes: dict[tuple, FaceAttributes] = {}

    @property
    def similarity_scale(self):
        return self.engine.similarity_scale

    @property
    def score_normalization(self):
        return self.engine.score_normalization

    def options(self) -> dict:
        return self.engine.options()

    def detect(self, image, max_faces: int = 100) -> list[DetectedFace]:
        if image.sha256 not in self._faces:
            self._faces[image.sha256] = self.engine.detect(image, max_faces=100)
        return self._faces[image.sha256][:max_faces]

    def _keys(self, image, faces: list[DetectedFace]) -> list[tuple]:
        return [(image.sha256, face.left, face.top, face.right, face.bottom) for face in faces]

    def embed(self, image, faces: list[DetectedFace]) -> np.ndarray:
        keys = self._keys(image, faces)
        missing = [i for i, key in enumerate(keys) if key not in self._vectors]
        if missing:
            vectors = self.engine.embed(image, [faces[i] for i in missing])
            for i, vector in zip(missing, vectors):
                self._vectors[keys[i]] = vector
        if not keys:
            return self.engine.embed(image, [])
        return np.stack([self._vectors[key] for key in keys])

    def analyze(self, image, faces: list[DetectedFace]) -> list[FaceAttributes]:
        keys = self._keys(image, faces)
        missing = [i for i, key in enumerate(keys) if key not in self._attributes]
        if missing:
            for i, attributes in zip(missing, self.engine.analyze(image, [faces[i] for i in missing])):
                self._attributes[keys[i]] = attributes
        return [self._attributes[key] for key in keys]
