"""Face engines: one interface (FaceEngine), backends behind it."""

from __future__ import annotations

import functools

from faceaudit.engine.base import LANDMARK_NAMES, DetectedFace, FaceAttributes, FaceEngine
from faceaudit.settings import GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV, Settings

__all__ = ["GENDER_HEAD_ENV", "LANDMARK_NAMES", "SCORE_NORMALIZATION_ENV", "DetectedFace", "FaceAttributes",
           "FaceEngine", "default_engine"]


@functools.lru_cache(maxsize=1)
def default_engine() -> FaceEngine:
    """The default engine, loaded once per process (loading models takes about a second),
    with the gender head and score normalization named by the environment, if any."""
    from faceaudit.engine.dlib_engine import DlibEngine
    settings = Settings.from_env()
    gender_head = score_normalization = None
    if settings.gender_head:
        from faceaudit.fairness.attribute_head import AttributeHead
        gender_head = AttributeHead.load(settings.gender_head)
    if settings.score_normalization:
        from faceaudit.fairness.score_normalization import FairScoreNormalization
        score_normalization = FairScoreNormalization.load(settings.score_normalization)
    return DlibEngine(gender_head=gender_head, score_normalization=score_normalization)
