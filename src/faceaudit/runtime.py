"""The default engine and its Scoring, composed from Settings: the one place that knows both.

The engine knows nothing of fairness; faceaudit.fairness knows nothing of
engines. What the environment asks for (a gender head, a score normalization,
see faceaudit.settings) is loaded and put together here, once per process
(loading models takes about a second).
"""

from __future__ import annotations

import functools
import threading
import weakref

from faceaudit.engine.base import FaceEngine
from faceaudit.scoring import Scoring
from faceaudit.settings import Settings


@functools.lru_cache(maxsize=1)
def default_engine() -> FaceEngine:
    """The default engine with the gender head the environment names, if any."""
    from faceaudit.engine.dlib_engine import DlibEngine

    settings = Settings.from_env()
    gender_head = None
    if settings.gender_head:
        from faceaudit.fairness.attribute_head import AttributeHead
        gender_head = AttributeHead.load(settings.gender_head)
    return DlibEngine(gender_head=gender_head)


_scorings: weakref.WeakKeyDictionary[FaceEngine, tuple[str | None, Scoring]] = weakref.WeakKeyDictionary()
_scorings_lock = threading.Lock()


def default_scoring(engine: FaceEngine, settings: Settings | None = None) -> Scoring:
    """The engine's Scoring with the score normalization the settings name (default: the
    environment), made once per engine and normalization file and then shared."""
    path = (settings or Settings.from_env()).score_normalization
    with _scorings_lock:
        cached = _scorings.get(engine)
        if cached is not None and cached[0] == path:
            return cached[1]
    normalization = None
    if path:
        from faceaudit.fairness.score_normalization import FairScoreNormalization
        normalization = FairScoreNormalization.load(path)
    scoring = Scoring.for_engine(engine, normalization)
    with _scorings_lock:
        _scorings[engine] = (path, scoring)
    return scoring
