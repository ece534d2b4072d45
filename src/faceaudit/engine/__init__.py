"""Face engines: one interface (FaceEngine), backends behind it."""

from __future__ import annotations

from faceaudit.engine.base import (
    LANDMARK_NAMES,
    DetectedFace,
    FaceAttributes,
    FaceEngine,
)
from faceaudit.settings import GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV

__all__ = ["GENDER_HEAD_ENV", "LANDMARK_NAMES", "SCORE_NORMALIZATION_ENV", "DetectedFace", "FaceAttributes",
           "FaceEngine", "default_engine"]


def default_engine() -> FaceEngine:
    """Transitional: use faceaudit.runtime.default_engine, which composes the engine with the
    optional models (the engine itself knows nothing of them). Kept, lazily forwarding, for
    engine/batch.py, whose callers include fairness/train.py (below the runtime); tests/test_layers.py
    lists this upward import as its one known exception."""
    from faceaudit.runtime import default_engine as composed
    return composed()
