"""SFace face embedding on onnxruntime, with OpenCV FaceRecognizerSF's alignment and input.

Mirrors opencv/modules/objdetect/src/face_recognize.cpp: the five YuNet
landmarks are mapped onto the ArcFace 112x112 template by a least-squares
similarity transform (Umeyama), the image warped with bilinear interpolation,
and the aligned face fed as RGB 0-255 (OpenCV's blobFromImage with swapRB; the
graph scales its input itself). Faces are compared by cosine similarity.
"""

from __future__ import annotations

import cv2
import numpy as np

from faceaudit.engine.attributes import onnx_session
from faceaudit.engine.opencv_zoo import SFACE_FILE, load_repaired

CHIP_SIZE = 112
# ArcFace's landmark template for 112x112 chips: the picture's left eye, right eye,
# nose tip, left and right mouth corners (YuNet's order).
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray = TEMPLATE) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation that best maps ``source`` (n, 2) onto
    ``target`` in least squares (Umeyama 1991), as OpenCV computes it for SFace."""
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(covariance) < 0:
        signs[-1] = -1.0
    rank = np.linalg.matrix_rank(covariance)
    if rank == 0:
        raise ValueError("degenerate landmarks")
    if rank == 1 and np.linalg.det(u) * np.linalg.det(vt) <= 0:
        rotation = u @ vt  # degenerate case, as Umeyama handles it
        signs = np.ones(2)
    else:
        rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum() / (src_c ** 2).sum(1).mean())
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align(pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 chip for five (x, y) landmarks in YuNet's order; same channel order as ``pixels``."""
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64).reshape(5, 2))
    return cv2.warpAffine(pixels, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR)


class SFace:
    """``embed(rgb_chips)`` -> (n, 128) float32, unnormalised, as the network outputs them."""

    def __init__(self, threads: int = 1) -> None:
        repaired = load_repaired(SFACE_FILE)
        self.file_sha256 = repaired.file_sha256
        self.session = onnx_session(repaired.model_bytes, threads=threads, dequantize_weights=True)
        self.input_name = self.session.get_inputs()[0].name

    def embed(self, rgb_chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        batch = np.asarray(rgb_chips if isinstance(rgb_chips, np.ndarray) else np.stack(rgb_chips))
        blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2).astype(np.float32))
        return self.session.run(None, {self.input_name: blob})[0].astype(np.float32, copy=False)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity between rows of ``a`` (n, d) and ``b`` (m, d): (n, m)."""
    a = np.atleast_2d(a) / np.linalg.norm(np.atleast_2d(a), axis=1, keepdims=True)
    b = np.atleast_2d(b) / np.linalg.norm(np.atleast_2d(b), axis=1, keepdims=True)
    return a @ b.T
