"""YuNet face detection on onnxruntime, decoded as OpenCV's FaceDetectorYN decodes it.

Mirrors opencv/modules/objdetect/src/face_detect.cpp: the BGR image (0-255, no
scaling or mean) padded at the bottom and right to a multiple of 32; for each
stride 8, 16, 32, a score sqrt(clamp(cls) * clamp(obj)) per grid cell, box centre
(col + dx, row + dy) * stride and size exp(dw, dh) * stride, five landmarks
(col + kx, row + ky) * stride; then non-maximum suppression on integer boxes
(cv2.dnn.NMSBoxes, as OpenCV does).
"""

from __future__ import annotations

import cv2
import numpy as np

from faceaudit.engine.attributes import onnx_session
from faceaudit.engine.opencv_zoo import YUNET_FILE, load_repaired

STRIDES = (8, 16, 32)
DIVISOR = 32


class YuNet:
    """``detect(bgr)`` -> (n, 15) float32 rows as OpenCV returns them:
    x, y, w, h, then (x, y) of right eye, left eye, nose tip, right and left mouth
    corners (the person's right: the picture's left), then the score; best first."""

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 5000,
                 threads: int = 1) -> None:
        repaired = load_repaired(YUNET_FILE)
        self.file_sha256 = repaired.file_sha256
        self.session = onnx_session(repaired.model_bytes, threads=threads, dequantize_weights=True)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        height, width = bgr.shape[:2]
        pad_h = ((height - 1) // DIVISOR + 1) * DIVISOR
        pad_w = ((width - 1) // DIVISOR + 1) * DIVISOR
        padded = cv2.copyMakeBorder(bgr, 0, pad_h - height, 0, pad_w - width, cv2.BORDER_CONSTANT, value=0)
        blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None].astype(np.float32))
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        rows = []
        for stride in STRIDES:
            cols_n, rows_n = pad_w // stride, pad_h // stride
            cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0.0, 1.0)
            obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = np.flatnonzero(score >= self.score_threshold)
            if keep.size == 0:
                continue
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
            kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep]
            c = (keep % cols_n).astype(np.float32)
            r = (keep // cols_n).astype(np.float32)
            assert cols_n * rows_n == cls.size, "YuNet output does not match the padded input"
            cx, cy = (c + bbox[:, 0]) * stride, (r + bbox[:, 1]) * stride
            w, h = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
            points = np.empty((keep.size, 10), dtype=np.float32)
            points[:, 0::2] = (kps[:, 0::2] + c[:, None]) * stride
            points[:, 1::2] = (kps[:, 1::2] + r[:, None]) * stride
            rows.append(np.column_stack([cx - w / 2, cy - h / 2, w, h, points, score[keep]]).astype(np.float32))
        if not rows:
            return np.zeros((0, 15), dtype=np.float32)
        faces = np.concatenate(rows)
        if len(faces) > 1:
            # OpenCV suppresses on boxes truncated to integers (Rect2i).
            boxes = [[int(x), int(y), int(w), int(h)] for x, y, w, h in faces[:, :4]]
            keep_idx = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_threshold, self.nms_threshold,
                                        eta=1.0, top_k=self.top_k)
            faces = faces[np.asarray(keep_idx, dtype=np.int64).reshape(-1)]
        return faces
