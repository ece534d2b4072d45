"""``faceaudit batch extract``: the audit's extraction (detections, attributes, embeddings) on a Dask cluster.

Each image's DetectFaces (Attributes ALL) response is built by
``faceaudit.rekognition``'s own DetectFaces over what a worker computed
(engine.distributed.ReplayEngine) and written to the audit's response cache
(audit/targets/cache.py) under the key the local target reads
(runs.detect_key with the local engine's fingerprint, scoring options left
out). An audit run afterwards with ``--target local --cache DIR`` therefore
sends no DetectFaces for these images. Beside it, the largest face's embedding
is cached (``FaceVector`` entries: BoundingBox and Vector).

The cache is the ledger: an image already answered is skipped, so a rerun
resumes. Images the engine refuses are cached with their error (as the target
does) and reported, never fatal; so is an image whose task kills its worker
process (``WorkerCrashedException``, cached: a rerun does not try it again);
files that cannot be read are reported and retried by the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from faceaudit.audit.targets.cache import ResponseCache, cache_key
from faceaudit.audit.targets.local import local_endpoint
from faceaudit.audit.targets.progress import progress_bar
from faceaudit.audit.targets.runs import DETECT_REQUEST, detect_key, target_fingerprint
from faceaudit.audit.targets.transport import IMAGE_ERRORS
from faceaudit.batch.indexing import TASK_IMAGES, BatchSummary, read_sources
from faceaudit.batch.sources import Source
from faceaudit.engine.distributed import (
    WORKER_CRASHED,
    FaceCluster,
    ImageFaces,
    ReplayEngine,
    chunked,
    compute_faces,
    killed_image,
)
from faceaudit.errors import RekognitionError
from faceaudit.settings import Settings


def vector_key(engine_fingerprint: str, sha256: str) -> str:
    """The cache key of one image's largest-face embedding."""
    return cache_key(engine_fingerprint, "FaceVector", sha256)


def local_engine_fingerprint(model_version: str, settings: Settings | None = None) -> str:
    """The local target's engine fingerprint (RekognitionTarget.engine_fingerprint) for these settings."""
    environment = (settings or Settings.from_env()).worker_environment()
    return target_fingerprint("local", local_endpoint(environment, scoring=False), model_version)


def extract_images(cache: ResponseCache, sources: Sequence[Source], cluster: FaceCluster, *,
                   progress: bool = True, stop_after: int | None = None,
                   settings: Settings | None = None) -> BatchSummary:
    """DetectFaces (Attributes ALL) and the largest face's embedding for every source not yet in ``cache``."""
    import hashlib

    from faceaudit.rekognition.faces import detect_faces

    settings = settings or Settings.from_env()
    environment = settings.worker_environment()
    fingerprint = local_engine_fingerprint(cluster.model_version(environment), settings)
    summary = BatchSummary(job=f"extract:{fingerprint[:12]}", total=len(sources))
    ticker: list[Callable[[], None]] = [lambda: None]  # the progress bar's advance, once it exists
    todo_count = [0]

    def tasks() -> Iterator[list[tuple[str, bytes]]]:
        for chunk in chunked(sources, TASK_IMAGES):
            items, unreadable = read_sources(chunk)
            for path, code, message in unreadable:
                summary.failed.append((path, code, message))
                ticker[0]()
            wanted = []
            for path, data in items:
                if cache.get(detect_key(fingerprint, hashlib.sha256(data).hexdigest())) is not None:
                    summary.already_done += 1
                    ticker[0]()
                elif stop_after is not None and todo_count[0] >= stop_after:
                    summary.stopped = True
                else:
                    todo_count[0] += 1
                    wanted.append((path, data))
            if wanted:
                yield wanted

    data_of: dict[str, bytes] = {}

    def with_bytes() -> Iterator[list[tuple[str, bytes]]]:
        for items in tasks():
            data_of.update(items)
            yield items

    with progress_bar(progress, f"DetectFaces and embeddings ({cluster.describe()})", len(sources)) as advance:
        ticker[0] = advance
        for results in cluster.map(compute_faces, with_bytes(), environment, killed=killed_image,
                                   embeddings=True, attributes=True):
            for found in results:
                _cache_one(cache, fingerprint, found, data_of.pop(found.key), detect_faces, summary)
                summary.processed += 1
                advance()
    return summary


def _cache_one(cache: ResponseCache, fingerprint: str, found: ImageFaces, data: bytes,
               detect_faces: Any, summary: BatchSummary) -> None:
    sha = found.sha256 or ""
    if found.error is not None:
        summary.failed.append((found.key, found.error, found.message or ""))
        # the same answer every time, as the target caches it; an image that kills the worker
        # is cached too, so that a rerun does not kill workers on it again
        if found.error in IMAGE_ERRORS or found.error == WORKER_CRASHED:
            cache.put(detect_key(fingerprint, sha), "DetectFaces",
                      {"Error": {"Code": found.error, "Message": found.message or ""}})
        return
    try:
        response = detect_faces(ReplayEngine(found), data, DETECT_REQUEST["Attributes"])
    except RekognitionError as error:
        summary.failed.append((found.key, error.code, error.message))
        return
    largest: dict[str, Any] = {"Faces": len(found.faces)}
    if found.faces and found.vectors is not None:
        largest.update(BoundingBox=response["FaceDetails"][0]["BoundingBox"],
                       Vector=[float(x) for x in found.vectors[0]])
    cache.put(vector_key(fingerprint, sha), "FaceVector", largest)
    cache.put(detect_key(fingerprint, sha), "DetectFaces", response)  # last: it marks the image done
    summary.faces += len(found.faces)
