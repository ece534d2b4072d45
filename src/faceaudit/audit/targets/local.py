"""The local target's backend: faceaudit's engine in worker processes over one shared store.

Each worker builds its own ``RekognitionService(default_engine(), EmbeddedStore(dir))``
over one shared store folder (EmbeddedStore is safe across processes, so a face
indexed by one worker is found by another's search). No retries of the call
itself: an in-process call either answers or raises for the image itself; only
a worker that dies is retried (once, in a fresh pool: see pool.py).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from faceaudit.audit.targets.pool import RestartingPool
from faceaudit.audit.targets.transport import Backend, Job, Outcome, run_job
from faceaudit.settings import (
    DEFAULT_ENGINE,
    ENGINE_ENV,
    GENDER_HEAD_ENV,
    SCORE_NORMALIZATION_ENV,
    Settings,
    apply_environment,
)

_worker_service: Any = None


def engine_environment() -> dict[str, str | None]:
    """The variables naming the engine and the optional models it loads (faceaudit.settings),
    as this process has them now (None: unset): workers are given these, since a forkserver
    worker does not see os.environ changes made after its server started."""
    return Settings.from_env().worker_environment()


def _local_worker_start(store_dir: str, environment: dict[str, str | None]) -> None:
    global _worker_service
    apply_environment(environment)
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.runtime import default_engine
    from faceaudit.storage import EmbeddedStore
    from faceaudit.storage.embedded import ApproximateSearch
    # NORMAL: a temporary audit store needs crash consistency, not power-cut durability.
    # Exact search at any size: an ANN index's misses need not fall evenly across groups.
    store = EmbeddedStore(store_dir, synchronous="NORMAL", approximate=ApproximateSearch(threshold=None))
    _worker_service = RekognitionService(default_engine(), store)


def _local_worker_job(job: Job) -> Outcome:
    return run_job(_worker_service.call, job)


def local_endpoint(environment: dict[str, str | None] | None = None, *, scoring: bool = True) -> str:
    """"local", plus the optional models the workers' engine will load (named by the
    environment, see faceaudit.engine) with a digest of each file: the cache fingerprint
    and the report must tell an engine with a gender head or a normalization from one without.

    ``scoring=False`` leaves out what only changes similarities (the score normalization):
    detections and embeddings cached under that name stay valid when only it changes."""
    environment = engine_environment() if environment is None else environment
    parts = ["local"]
    # Workers build the engine FACEAUDIT_ENGINE names: two engines never share cached answers.
    engine = environment.get(ENGINE_ENV) or DEFAULT_ENGINE
    if engine != DEFAULT_ENGINE:
        parts.append(f"engine:{engine}")
    for name, label in ((GENDER_HEAD_ENV, "gender-head"), (SCORE_NORMALIZATION_ENV, "score-normalization")):
        value = environment.get(name)
        if name == SCORE_NORMALIZATION_ENV and not scoring:
            continue
        if value:
            digest = hashlib.sha256(Path(value).read_bytes()).hexdigest()[:12]
            parts.append(f"{label}:{digest}")
    return "+".join(parts)


class LocalBackend(Backend):
    """faceaudit's engine in worker processes over one shared EmbeddedStore folder.

    ``store_dir`` None: a temporary folder, removed by close(). Workers start by
    forkserver (see pool.py: a script using this needs the
    ``if __name__ == "__main__":`` guard); each builds its own engine (models load
    once per worker, ~1 s) and store, with the engine settings this process had
    when the backend was made. Nothing here loads the engine in the calling process.
    """

    kind = "local"
    search_mode = "exact"  # the workers' stores never switch to approximate search (see below)

    def __init__(self, workers: int | None = None, store_dir: str | os.PathLike[str] | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.environment = engine_environment()  # read once: the endpoint and the workers agree
        self.endpoint = local_endpoint(self.environment)
        self._engine_endpoint = local_endpoint(self.environment, scoring=False)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="faceaudit-audit-store-")
            store_dir = self._tmp.name
        self.store_dir = str(store_dir)
        self.persistent_store = self._tmp is None
        self._pool: RestartingPool | None = None
        self._lock = threading.Lock()

    @property
    def engine_endpoint(self) -> str:
        return self._engine_endpoint

    def _executor(self) -> RestartingPool:
        with self._lock:
            if self._pool is None:
                self._pool = RestartingPool(self.workers, _local_worker_start, (self.store_dir, self.environment))
            return self._pool

    def submit(self, job: Job) -> Future[Outcome]:
        return self._executor().submit(_local_worker_job, job)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
