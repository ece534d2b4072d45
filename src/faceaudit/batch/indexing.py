"""``faceaudit index-folder``: IndexFaces for every image of a folder or CSV listing, on a Dask cluster.

Workers detect, embed and analyze (engine.distributed); this process runs
``faceaudit.rekognition``'s own IndexFaces on each image with those results
(engine.distributed.ReplayEngine), so the collection's model version check,
QualityFilter, MaxFaces and the response are those of a single request, and
writes the faces of a batch of images to the store in one transaction, between
the ledger's ``pending`` and ``done`` marks (ledger.py: a rerun resumes, with no
face indexed twice). An image the engine refuses is reported with its
Rekognition error code and never stops the job; so does an image whose task kills
its worker process (engine.distributed.FaceCluster.map: ``WorkerCrashedException``),
recorded ``failed`` so that a rerun does not try it again (``retry_failed`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from faceaudit.audit.targets.progress import progress_bar
from faceaudit.batch.ledger import Ledger, LedgerRow
from faceaudit.batch.sources import Source
from faceaudit.engine.distributed import (
    FaceCluster,
    ImageFaces,
    ReplayEngine,
    chunked,
    compute_faces,
    killed_image,
)
from faceaudit.errors import RekognitionError, ResourceNotFoundException
from faceaudit.settings import Settings
from faceaudit.storage import FaceStore, StoredFace

UNREADABLE = "UnreadableImageFile"  # the file could not be read from disk (the audit's code too)
TASK_IMAGES = 16  # images per worker task: a second or more of engine work, so per-task overhead is noise
WRITE_IMAGES = 64  # images whose faces are written in one store transaction


@dataclass
class BatchSummary:
    """What one run did (and what earlier runs of the same job had done)."""

    job: str
    total: int
    already_done: int = 0
    processed: int = 0
    faces: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (file, error code, message)
    recovered: int = 0  # pending images found in the store after a kill
    stopped: bool = False
    failed_before: list[tuple[str, str, str]] = field(default_factory=list)  # refused in an earlier run

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "total": self.total, "already_done": self.already_done,
                "processed": self.processed, "faces": self.faces, "recovered": self.recovered,
                "stopped": self.stopped,
                "failed": [{"file": f, "error": code, "message": message} for f, code, message in self.failed],
                "failed_before": [{"file": f, "error": code, "message": message}
                                  for f, code, message in self.failed_before]}


class _DeferredWrites:
    """The store as IndexFaces sees it, except that add_faces is held until flush()."""

    def __init__(self, store: FaceStore):
        self._store = store
        self.held: list[StoredFace] = []

    def add_faces(self, collection_id: str, faces: Sequence[StoredFace]) -> None:
        self.held.extend(faces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def read_sources(sources: Sequence[Source]) -> tuple[list[tuple[str, bytes]], list[tuple[str, str, str]]]:
    """(path, bytes) of the files that could be read, and (path, code, message) of the others."""
    items, unreadable = [], []
    for source in sources:
        try:
            with open(source.path, "rb") as f:
                items.append((source.path, f.read()))
        except OSError as error:
            unreadable.append((source.path, UNREADABLE, str(error.strerror or error)))
    return items, unreadable


def _recover(ledger: Ledger, store: FaceStore, collection_id: str, summary: BatchSummary) -> None:
    """Pending rows of a killed run: done if their faces reached the store, else forgotten (redone)."""
    pending = ledger.rows("pending")
    if not pending:
        return
    wanted = [face_id for row in pending for face_id in row.face_ids]
    present = {face.face_id for face in store.get_faces(collection_id, wanted)} if wanted else set()
    committed = [LedgerRow(r.source, r.sha256, "done", r.face_ids) for r in pending
                 if all(face_id in present for face_id in r.face_ids)]
    ledger.record(committed)
    ledger.forget(r.source for r in pending if not all(face_id in present for face_id in r.face_ids))
    summary.recovered = len(committed)


def index_images(store: FaceStore, collection_id: str, sources: Sequence[Source], cluster: FaceCluster,
                 ledger: Ledger, *, max_faces: int | None = None, quality_filter: str | None = None,
                 detection_attributes: Sequence[str] | None = None, progress: bool = True,
                 stop_after: int | None = None, settings: Settings | None = None,
                 retry_failed: bool = False) -> BatchSummary:
    """IndexFaces for each source not yet done in ``ledger``; the collection is created (with the
    workers' model version) if it does not exist. ``stop_after``: stop once that many images have
    been processed in this run (what an interruption leaves, for tests and for splitting a job).
    ``retry_failed``: try again the images an earlier run recorded as failed."""
    from faceaudit.rekognition.collections import collection_for, create_collection, index_faces

    environment = (settings or Settings.from_env()).worker_environment()
    summary = BatchSummary(job=ledger.job, total=len(sources))
    model_version = cluster.model_version(environment)
    try:
        store.describe_collection(collection_id)
    except ResourceNotFoundException:
        create_collection(cast(Any, _Version(model_version)), store, collection_id)
    collection_for(cast(Any, _Version(model_version)), store, collection_id)  # the same model, or a clear error
    _recover(ledger, store, collection_id, summary)
    if retry_failed:
        ledger.forget([row.source for row in ledger.rows("failed")])

    by_path = {s.path: s for s in sources}
    finished = ledger.finished([s.path for s in sources])
    todo = [s for s in sources if s.path not in finished]
    summary.already_done = len(sources) - len(todo)
    wanted = set(by_path)
    summary.failed_before = [(r.source, r.error or "", r.message or "") for r in ledger.rows("failed")
                             if r.source in wanted]
    if stop_after is not None:
        todo = todo[:stop_after]
        summary.stopped = len(todo) < len(sources) - summary.already_done
    in_flight: dict[str, bytes] = {}
    ticker: list[Callable[[], None]] = [lambda: None]  # the progress bar's advance, once it exists

    def tasks() -> Iterator[list[tuple[str, bytes]]]:
        for chunk in chunked(todo, TASK_IMAGES):
            items, unreadable = read_sources(chunk)
            for path, code, message in unreadable:
                summary.failed.append((path, code, message))  # not recorded: a rerun tries again
                ticker[0]()
            in_flight.update(items)
            yield items

    deferred = _DeferredWrites(store)
    batch: list[LedgerRow] = []

    def flush() -> None:
        ledger.record([row for row in batch if row.state == "pending"])
        if deferred.held:
            store.add_faces(collection_id, deferred.held)
        ledger.record([LedgerRow(r.source, r.sha256, "done" if r.state == "pending" else r.state,
                                 r.face_ids, r.error, r.message) for r in batch])
        deferred.held.clear()
        batch.clear()

    with progress_bar(progress, f"IndexFaces into {collection_id} ({cluster.describe()})", len(todo)) as advance:
        ticker[0] = advance
        for results in cluster.map(compute_faces, tasks(), environment, killed=killed_image, embeddings=True,
                                   attributes=bool(detection_attributes)):
            for found in results:
                data = in_flight.pop(found.key)
                batch.append(_index_one(index_faces, deferred, collection_id, by_path[found.key], found, data,
                                        max_faces, quality_filter, detection_attributes, summary))
                summary.processed += 1
                advance()
            if len(batch) >= WRITE_IMAGES:
                flush()
        flush()
    return summary


class _Version:
    """Just enough of an engine for create_collection / collection_for: its model version."""

    def __init__(self, model_version: str):
        self.model_version = model_version


def _index_one(index_faces: Any, deferred: _DeferredWrites, collection_id: str, source: Source,
               found: ImageFaces, data: bytes, max_faces: int | None, quality_filter: str | None,
               detection_attributes: Sequence[str] | None, summary: BatchSummary) -> LedgerRow:
    if found.error is not None:
        summary.failed.append((source.path, found.error, found.message or ""))
        return LedgerRow(source.path, found.sha256, "failed", (), found.error, found.message)
    try:
        response = index_faces(ReplayEngine(found), cast(FaceStore, deferred), collection_id, data,
                               external_image_id=source.external_image_id,
                               detection_attributes=list(detection_attributes or []) or None,
                               max_faces=max_faces, quality_filter=quality_filter)
    except RekognitionError as error:
        summary.failed.append((source.path, error.code, error.message))
        return LedgerRow(source.path, found.sha256, "failed", (), error.code, error.message)
    face_ids = tuple(record["Face"]["FaceId"] for record in response["FaceRecords"])
    summary.faces += len(face_ids)
    return LedgerRow(source.path, found.sha256, "pending", face_ids)
