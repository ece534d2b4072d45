"""The engine's work on many images spread over a Dask cluster: local processes, or a cluster by address.

Why Dask distributed (measured on this 2-core machine, 2 workers, see docs/scale.md):
it starts in 3-6 s against Ray's 12-18 s, holds about 620 MB for two workers with
a model loaded against Ray's 1.4 GB over 12 processes, and installs in 65 MB
against 279 MB. Ray's lower per-task overhead (about 2-3 ms against 6-14 ms) does
not matter here: a task is a chunk of images, a second or more of engine work.

One code path for both modes: :class:`FaceCluster` is a ``dask.distributed.Client``
on a ``LocalCluster`` (``address=None``: one single-threaded worker process per
core) or on the scheduler at ``address`` (``tcp://host:8786``). Image *bytes* are
sent to the workers, so they need no shared file system. Each worker process
builds its engine once, on its first task, with the settings the caller had
(Settings.worker_environment): a worker never reads a changed environment.

A worker returns :class:`ImageFaces` (the faces, their vectors and attributes, as
plain data). :class:`ReplayEngine` answers the operations with them in the
calling process, so ``faceaudit.rekognition``'s own IndexFaces and DetectFaces
build the responses and write the store, exactly as for a single request.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from faceaudit.engine.base import DetectedFace, FaceAttributes, FaceEngine
from faceaudit.errors import RekognitionError

if TYPE_CHECKING:
    from faceaudit.images import LoadedImage
    from faceaudit.similarity import SimilarityScale

#: Up to this many faces per image, as the operations ask the engine for (rekognition.faces.MAX_FACES).
MAX_FACES = 100


@dataclass(frozen=True)
class ImageFaces:
    """What the engine found in one image, computed on a worker."""

    key: str  # the caller's name for the image (a path)
    sha256: str | None
    model_version: str
    faces: tuple[DetectedFace, ...] = ()
    vectors: np.ndarray | None = None  # (len(faces), dim) float32, when embeddings were asked for
    attributes: tuple[FaceAttributes, ...] | None = None  # when attributes were asked for
    error: str | None = None  # Rekognition error code when the image could not be read
    message: str | None = None


_worker_engine: FaceEngine | None = None
_worker_environment: dict[str, str | None] | None = None


def _engine_here(environment: dict[str, str | None]) -> FaceEngine:
    """This worker process's engine, built once (again only if the caller's settings differ)."""
    global _worker_engine, _worker_environment
    if _worker_engine is None or environment != _worker_environment:
        from faceaudit.engine import default_engine  # the runtime's, through the engine's forward
        from faceaudit.settings import apply_environment
        apply_environment(environment)
        _worker_engine, _worker_environment = default_engine(), dict(environment)
    return _worker_engine


def _model_version_here(environment: dict[str, str | None]) -> str:
    return _engine_here(environment).model_version


def compute_faces(items: Sequence[tuple[str, bytes]], environment: dict[str, str | None], *,
                  embeddings: bool, attributes: bool) -> list[ImageFaces]:
    """(runs on a worker) Detect up to MAX_FACES faces in each image; embed and analyze all of them
    when asked. An image that cannot be decoded is an ImageFaces with its error code, not a failure."""
    import hashlib

    from faceaudit.images import load_image
    engine = _engine_here(environment)
    results = []
    for key, data in items:
        sha = hashlib.sha256(data).hexdigest()
        try:
            image = load_image(data)
            faces = engine.detect(image, max_faces=MAX_FACES)
            vectors = engine.embed(image, faces) if embeddings else None
            analyzed = tuple(engine.analyze(image, faces)) if attributes and faces else (() if attributes else None)
        except RekognitionError as error:  # the image's own fault (format, size): an answer about it
            results.append(ImageFaces(key, sha, engine.model_version, error=error.code, message=error.message))
            continue
        # A backend's private alignment data need not travel (embed and analyze have run).
        plain = tuple(dataclasses.replace(face, alignment=None) for face in faces)
        results.append(ImageFaces(key, sha, engine.model_version, plain, vectors, analyzed))
    return results


class ReplayEngine(FaceEngine):
    """An engine that answers for one image with what a worker computed (ImageFaces).

    The operations ask it exactly what they ask the real engine (detect up to
    MAX_FACES; embed or analyze some of those faces), so their responses are the
    ones a single-process call gives."""

    def __init__(self, found: ImageFaces):
        self.found = found
        self.model_version = found.model_version
        self._index = {self._face_key(face): i for i, face in enumerate(found.faces)}

    @staticmethod
    def _face_key(face: DetectedFace) -> tuple[float, float, float, float]:
        return (face.left, face.top, face.right, face.bottom)

    @property
    def similarity_scale(self) -> SimilarityScale:
        raise NotImplementedError("a ReplayEngine only replays detection, embedding and attributes")

    def _check(self, image: LoadedImage) -> None:
        if self.found.sha256 is not None and image.sha256 != self.found.sha256:
            raise ValueError("ReplayEngine asked about another image than the one it replays")

    def detect(self, image: LoadedImage, max_faces: int = MAX_FACES) -> list[DetectedFace]:
        self._check(image)
        if max_faces > MAX_FACES:
            raise ValueError(f"the worker detected at most {MAX_FACES} faces")
        return list(self.found.faces[:max_faces])

    def _positions(self, faces: list[DetectedFace]) -> list[int]:
        return [self._index[self._face_key(face)] for face in faces]

    def embed(self, image: LoadedImage, faces: list[DetectedFace]) -> np.ndarray:
        self._check(image)
        if self.found.vectors is None:
            raise ValueError("the worker was not asked for embeddings")
        return self.found.vectors[self._positions(faces)]

    def analyze(self, image: LoadedImage, faces: list[DetectedFace]) -> list[FaceAttributes]:
        self._check(image)
        if self.found.attributes is None:
            raise ValueError("the worker was not asked for attributes")
        return [self.found.attributes[i] for i in self._positions(faces)]


MODEL_VERSION_ATTEMPTS = 3

#: The error code an image gets when its task kills the worker process every time it runs.
WORKER_CRASHED = "WorkerCrashedException"


def _killed_reason(error: BaseException) -> str:
    return ("the engine's worker process died (crashed or was killed) each time it worked on this image "
            f"alone; skipped so that the rest of the job completes ({type(error).__name__}: {error})")


def killed_image(item: tuple[str, bytes], reason: str) -> list[ImageFaces]:
    """``FaceCluster.map``'s ``killed`` for compute_faces: the image is reported as failed."""
    import hashlib

    key, data = item
    return [ImageFaces(key, hashlib.sha256(data).hexdigest(), "", error=WORKER_CRASHED, message=reason)]


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class FaceCluster:
    """A Dask client: on a LocalCluster of ``workers`` processes (``address`` None) or on a cluster.

    A script that makes a local one needs the ``if __name__ == "__main__":`` guard
    (its workers are spawned processes, which import the main module)."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        from dask.distributed import Client, LocalCluster
        self.address = address
        self._cluster = None
        if address:
            self.client = Client(address)
        else:
            self.workers_requested = max(1, workers or os.cpu_count() or 1)
            # One thread per worker: the engine's sessions are sized for one core each.
            self._cluster = LocalCluster(n_workers=self.workers_requested, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self.client = Client(self._cluster)

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def model_version(self, environment: dict[str, str | None]) -> str:
        """The model version of the workers' engine (one worker loads its models to say). Asked
        again when the worker it ran on died meanwhile (another job's image may have killed it)."""
        from distributed.scheduler import KilledWorker
        for attempt in range(MODEL_VERSION_ATTEMPTS):
            try:
                return self.client.submit(_model_version_here, environment, pure=False).result()
            except KilledWorker:
                if attempt == MODEL_VERSION_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def describe(self) -> str:
        return f"Dask cluster {self.address}" if self.address else f"local Dask cluster, {self.workers} workers"

    def map(self, fn: Callable[..., Any], chunks: Iterable[list[Any]], *args: Any, window: int | None = None,
            killed: Callable[[Any, str], Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """``fn(chunk, *args, **kwargs)`` for each chunk (a list of items), yielded as they finish,
        with at most ``window`` tasks queued (default 4 per worker) so that millions of chunks
        never sit in memory.

        A chunk whose task killed its worker process ``distributed.scheduler.allowed-failures``
        + 1 times (Dask's KilledWorker: the process crashed or was killed, e.g. out of memory)
        is split: after every other chunk, each of its items runs alone, one at a time, so a
        worker death can only be that item's doing. An item that still kills its worker yields
        ``killed(item, reason)`` (without ``killed``, KilledWorker is raised)."""
        from dask.distributed import as_completed
        from distributed.scheduler import KilledWorker
        window = window or 4 * self.workers
        source = iter(chunks)
        pending = as_completed()
        suspects: list[Any] = []  # the items of chunks that killed their worker

        def submit(chunk: list[Any]) -> Any:
            future = self.client.submit(fn, chunk, *args, pure=False, **kwargs)
            future.chunk = chunk  # type: ignore[attr-defined]  # what to split if it kills its worker
            return future

        for chunk in source:
            pending.add(submit(chunk))
            if pending.count() >= window:
                break
        for future in pending:
            try:
                result, finished = future.result(), True
            except KilledWorker:
                if killed is None:
                    raise
                suspects.extend(future.chunk)
                finished = False
            future.release()
            if finished:
                yield result
            nxt = next(source, None)
            if nxt is not None:
                pending.add(submit(nxt))
        for item in suspects:  # alone: nothing else runs on the cluster for this job now
            future = submit([item])
            try:
                result = future.result()
            except KilledWorker as error:
                assert killed is not None
                result = killed(item, _killed_reason(error))
            future.release()
            yield result

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> FaceCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
