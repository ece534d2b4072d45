"""Face engines: one interface (FaceEngine), backends behind it."""

from __future__ import annotations

import functools

from faceaudit.engine.base import LANDMARK_NAMES, DetectedFace, FaceAttributes, FaceEngine

__all__ = ["LANDMARK_NAMES", "DetectedFace", "FaceAttributes", "FaceEngine", "default_engine"]


@functools.lru_cache(maxsize=1)
def default_engine() -> FaceEngine:
    """The default engine, loaded once per process (loading models takes about a second)."""
    from faceaudit.engine.dlib_engine import DlibEngine
    return DlibEngine()
