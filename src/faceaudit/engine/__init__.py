"""Face engines: one interface (FaceEngine), backends behind it."""

from __future__ import annotations

import functools
import os

from faceaudit.engine.base import LANDMARK_NAMES, DetectedFace, FaceAttributes, FaceEngine

__all__ = ["LANDMARK_NAMES", "DetectedFace", "FaceAttributes", "FaceEngine", "default_engine"]


# Optional models that change the default engine's answers, named by environment so
# that every process of a server or an audit (workers included) loads the same ones.
GENDER_HEAD_ENV = "FACEAUDIT_GENDER_HEAD"  # an AttributeHead file (faceaudit train attribute)
SCORE_NORMALIZATION_ENV = "FACEAUDIT_SCORE_NORMALIZATION"  # a FairScoreNormalization file


@functools.lru_cache(maxsize=1)
def default_engine() -> FaceEngine:
    """The default engine, loaded once per process (loading models takes about a second),
    with the gender head and score normalization named by the environment, if any."""
    from faceaudit.engine.dlib_engine import DlibEngine
    gender_head = score_normalization = None
    if os.environ.get(GENDER_HEAD_ENV):
        from faceaudit.fairness.attribute_head import AttributeHead
        gender_head = AttributeHead.load(os.environ[GENDER_HEAD_ENV])
    if os.environ.get(SCORE_NORMALIZATION_ENV):
        from faceaudit.fairness.score_normalization import FairScoreNormalization
        score_normalization = FairScoreNormalization.load(os.environ[SCORE_NORMALIZATION_ENV])
    return DlibEngine(gender_head=gender_head, score_normalization=score_normalization)
