"""Run the engine over many image files on all cores, keeping the largest face of each.

Tests, benchmarks, calibration and audits all need "the largest face of each of
these N files: its box, embedding, age and gender". One pool of worker
processes, each loading the models once, serves all of them.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.base import FaceEngine
from faceaudit.errors import RekognitionError
from faceaudit.settings import Settings, apply_environment


@dataclass(frozen=True)
class FileResult:
    """The largest face of one file (or why there is none)."""

    path: str
    face_count: int
    box: tuple[float, float, float, float] | None = None  # left, top, right, bottom (pixels)
    confidence: float | None = None
    embedding: np.ndarray | None = None
    gender: str | None = None
    gender_confidence: float | None = None
    age: float | None = None
    age_low: int | None = None  # the AgeRange the engine answers with
    age_high: int | None = None
    error: str | None = None  # Rekognition error code when the file could not be read

    @property
    def detected(self) -> bool:
        return self.face_count > 0


_worker_engine: FaceEngine | None = None


def _start_worker(engine_factory: Callable[[], FaceEngine] | None,
                  environment: dict[str, str | None] | None = None) -> None:
    global _worker_engine
    apply_environment(environment or {})  # the caller's engine and models, not the forkserver's
    if engine_factory is None:
        from faceaudit.engine import default_engine  # the runtime's, through the engine's forward
        engine_factory = default_engine
    _worker_engine = engine_factory()


def _analyze_one(path: str) -> FileResult:
    from faceaudit.images import load_image
    engine = _worker_engine
    assert engine is not None, "_start_worker runs first in every worker"
    try:
        image = load_image(path)
    except RekognitionError as error:
        return FileResult(path=path, face_count=0, error=error.code)
    faces = engine.detect(image)
    if not faces:
        return FileResult(path=path, face_count=0)
    face = faces[0]
    embedding = engine.embed(image, [face])[0]
    attributes = engine.analyze(image, [face])[0]
    return FileResult(
        path=path, face_count=len(faces), box=(face.left, face.top, face.right, face.bottom),
        confidence=face.confidence, embedding=embedding, gender=attributes.gender,
        gender_confidence=attributes.gender_confidence, age=attributes.age,
        age_low=attributes.age_low, age_high=attributes.age_high,
    )


def analyze_files(paths: Sequence[str], workers: int | None = None, progress: bool = True,
                  engine_factory: Callable | None = None, description: str = "Analyzing faces"
                  ) -> list[FileResult]:
    """The largest face of every file, in the order given.

    ``workers`` defaults to the number of cores; ``engine_factory`` (a picklable
    callable returning a FaceEngine) defaults to the default engine.
    """
    paths = [str(p) for p in paths]
    environment = Settings.from_env().worker_environment()
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) or 1))
    chunk = max(1, min(16, len(paths) // (workers * 8) or 1))
    if workers == 1:
        _start_worker(engine_factory)
        results: Iterable[FileResult] = map(_analyze_one, paths)
        executor = None
    else:
        # forkserver: forking this (threaded) process can deadlock a worker; callers need a __main__ guard
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                                       initializer=_start_worker, initargs=(engine_factory, environment))
        results = executor.map(_analyze_one, paths, chunksize=chunk)
    try:
        if progress:
            from rich.progress import track
            results = track(results, total=len(paths), description=description, transient=True)
        return list(results)
    finally:
        if executor is not None:
            executor.shutdown()
