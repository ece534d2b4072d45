"""Targets that speak Rekognition: faceaudit's engine in-process, or any endpoint through botocore.

One class, :class:`RekognitionTarget`, asks every question through a
Rekognition-like ``call(operation, request) -> response`` (Python shapes, as
boto3 passes and returns them), so the local target and a rekognition target
pointed at faceaudit's own server run the very same code and give the very same
numbers. Only how ``call`` is reached differs (a :class:`Backend`):

* :class:`LocalBackend` -- a pool of worker processes (default: one per core),
  each with its own ``RekognitionService(default_engine(), EmbeddedStore(dir))``
  over one shared store folder (EmbeddedStore is safe across processes, so a
  face indexed by one worker is found by another's search). No retries: an
  in-process call either answers or raises for the image itself.
* :class:`ThreadBackend` -- a thread pool (default 4 threads), one client per
  thread; :func:`botocore_backend` makes one for an endpoint URL or for
  Amazon's own endpoint. Throttling is retried by botocore's own "adaptive"
  retry mode (exponential backoff plus a client-side rate limiter), not by a
  loop written here.

Operations used (all exist on Amazon Rekognition): DetectFaces (Attributes ALL),
CreateCollection, DeleteCollection, IndexFaces (MaxFaces 1, QualityFilter NONE,
ExternalImageId ``i<n>``), SearchFaces and SearchFacesByImage (FaceMatchThreshold
0).

Errors: an image the target refuses for a reason of the image's own
(:data:`IMAGE_ERRORS`, e.g. InvalidImageFormatException) is an answer about that
image (``Detection(error=code)``, no similarity, no matches). Any other error
(bad credentials, throttling after botocore's retries, a server error) raises
:class:`TargetError`: an audit that silently counted those as "no face" would
be wrong, and the cache lets the rerun continue where this one stopped.

Resuming (see target_cache.py for the cache itself):

* DetectFaces responses are cached per (target fingerprint, image SHA-256,
  parameters): a rerun sends DetectFaces only for images not yet answered.
* similarities() and search() work on a *run*: the ordered list of distinct
  image contents (SHA-256) being indexed, under the target's fingerprint. The
  run's temporary collection (``faceaudit-audit-<uuid8>``), each image's
  IndexFaces outcome (its FaceId, or no face), each SearchFaces response
  (reduced to the similarities to that image's partners in the pairs: a full
  answer holds every face of the run) and each probe's SearchFacesByImage
  response (its matches) are cached under the run. Searches
  start only once the whole run is indexed, so a cached search response is
  final. A rerun therefore searches only what was not searched, and indexes
  only what is not yet in the collection -- when the collection still exists
  (CreateCollection answers ResourceAlreadyExistsException); if it is gone,
  everything is indexed again into a fresh one. A completed run answers from
  the cache alone, without calls.
* Collections are deleted when a run completes and by close(). A run
  *interrupted* (Ctrl-C, or a TargetError) keeps its collection when the cache
  is on disk (``keep_interrupted=True``), so that the rerun need not index
  again; it is deleted when that rerun completes. With an in-memory cache or
  ``keep_interrupted=False`` close() deletes it too.
* Faces are mapped back to images by ExternalImageId, never by FaceId, so a
  face indexed twice (the process died between the target's commit and the
  cache's) only repeats a match, which is counted once.

Similarities are read from SearchFaces with MaxFaces 4096 (Rekognition's
maximum): for a pair (a, b), a's response gives b's similarity (else b's
response a's). A partner outside the top 4096 -- only possible when the run
holds more than 4097 faces -- is reported as similarity 0.0: it is certainly
below every threshold that matters, since 4096 other faces scored higher.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from faceaudit.audit.target_cache import ResponseCache, cache_key, file_sha256
from faceaudit.audit.targets import Detection, Match, Target

#: Errors that are the target's answer about one image, not a failure of the audit.
IMAGE_ERRORS = frozenset({
    "InvalidImageFormatException", "ImageTooLargeException", "InvalidParameterException",
    "InvalidS3ObjectException", "ValidationException",
    "UnreadableImageFile",  # the file could not be read from disk (not sent; never cached)
})
UNREADABLE = "UnreadableImageFile"

SEARCH_MAX_FACES = 4096  # Rekognition's maximum MaxFaces for SearchFaces
DETECT_REQUEST = {"Attributes": ["ALL"]}
INDEX_REQUEST = {"MaxFaces": 1, "QualityFilter": "NONE"}
RUN_VERSION = "faceaudit-run-v1"
COLLECTION_PREFIX = "faceaudit-audit-"
DEFAULT_REMOTE_THREADS = 4


class TargetError(RuntimeError):
    """The target failed in a way that is not an answer about one image."""

    def __init__(self, code: str, message: str, operation: str | None = None):
        super().__init__(f"{operation + ': ' if operation else ''}{code}: {message}")
        self.code = code
        self.message = message
        self.operation = operation


# --- jobs: one operation, answered by an outcome ---------------------------------------
@dataclass(frozen=True)
class Job:
    """One operation. ``image``: a file whose bytes become the request's Image.Bytes
    (read where the call runs, so images are never pickled to a worker twice)."""

    operation: str
    request: dict
    image: str | None = None


# ("ok", response) or ("error", code, message)
Outcome = tuple


def error_of(exc: BaseException) -> tuple[str, str] | None:
    """(code, message) of an error a Rekognition call can raise; None for anything else."""
    from faceaudit.errors import RekognitionError
    if isinstance(exc, RekognitionError):
        return exc.code, exc.message
    try:
        from botocore.exceptions import ClientError, ParamValidationError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return None
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code") or "Unknown"), str(error.get("Message") or exc)
    if isinstance(exc, ParamValidationError):  # botocore refused the request before sending it
        return "InvalidParameterException", str(exc)
    return None


def run_job(call: Callable[[str, dict], dict], job: Job) -> Outcome:
    if job.image is not None:
        try:
            with open(job.image, "rb") as f:
                data = f.read()
        except OSError as error:
            return ("error", UNREADABLE, f"{job.image}: {error.strerror or error}")
        if not data:
            # Rekognition's API rejects an empty Image.Bytes before the operation runs (the
            # blob's minimum length is 1), and so does faceaudit's HTTP server; the
            # in-process service would say InvalidImageFormatException. Answer as the API
            # does, without a call, so that every backend gives the same answer.
            return ("error", "InvalidParameterException",
                    "Value '<0 bytes>' at 'image.bytes' failed to satisfy constraint: "
                    "Member must have length greater than or equal to 1")
        request = {**job.request, "Image": {"Bytes": data}}
    else:
        request = job.request
    try:
        response = call(job.operation, request)
    except Exception as exc:
        error = error_of(exc)
        if error is None:
            raise
        return ("error", *error)
    response = dict(response)
    response.pop("ResponseMetadata", None)
    return ("ok", response)


# --- backends ---------------------------------------------------------------------------
class Backend(ABC):
    """Where calls run. ``submit`` returns a Future of an Outcome."""

    kind: str  # "local" or "rekognition"
    endpoint: str  # what the fingerprint and the report name
    workers: int

    @abstractmethod
    def submit(self, job: Job) -> Future:
        ...

    def run(self, job: Job) -> Outcome:
        return self.submit(job).result()

    def close(self) -> None:
        pass


_worker_service = None


def _local_worker_start(store_dir: str) -> None:
    global _worker_service
    from faceaudit.engine import default_engine
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.storage import EmbeddedStore
    # NORMAL: a temporary audit store needs crash consistency, not power-cut durability.
    _worker_service = RekognitionService(default_engine(), EmbeddedStore(store_dir, synchronous="NORMAL"))


def _local_worker_job(job: Job) -> Outcome:
    return run_job(_worker_service.call, job)


def local_endpoint() -> str:
    """"local", plus the optional models the workers' engine will load (named by the
    environment, see faceaudit.engine) with a digest of each file: the cache fingerprint
    and the report must tell an engine with a gender head or a normalization from one without."""
    import hashlib

    from faceaudit.engine import GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV
    from faceaudit.settings import DEFAULT_ENGINE, ENGINE_ENV
    parts = ["local"]
    # Workers build the engine FACEAUDIT_ENGINE names: two engines never share cached answers.
    engine = os.environ.get(ENGINE_ENV) or DEFAULT_ENGINE
    if engine != DEFAULT_ENGINE:
        parts.append(f"engine:{engine}")
    for name, label in ((GENDER_HEAD_ENV, "gender-head"), (SCORE_NORMALIZATION_ENV, "score-normalization")):
        if os.environ.get(name):
            digest = hashlib.sha256(Path(os.environ[name]).read_bytes()).hexdigest()[:12]
            parts.append(f"{label}:{digest}")
    return "+".join(parts)


class LocalBackend(Backend):
    """faceaudit's engine in worker processes over one shared EmbeddedStore folder.

    ``store_dir`` None: a temporary folder, removed by close(). Workers start
    the platform's default way, as faceaudit.engine.batch's do (fork on Linux;
    spawn elsewhere, where a script needs the ``if __name__ == "__main__"``
    guard); each builds its own engine (models load once per worker, ~1 s) and
    store. Nothing here loads the engine in the calling process.
    """

    kind = "local"

    def __init__(self, workers: int | None = None, store_dir: str | os.PathLike | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.endpoint = local_endpoint()
        self._tmp = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="faceaudit-audit-store-")
            store_dir = self._tmp.name
        self.store_dir = str(store_dir)
        self.persistent_store = self._tmp is None
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, initializer=_local_worker_start, initargs=(self.store_dir,))
            return self._pool

    def submit(self, job: Job) -> Future:
        return self._executor().submit(_local_worker_job, job)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class ThreadBackend(Backend):
    """Calls on a thread pool, each thread with its own ``call`` from ``make_call()``."""

    kind = "rekognition"

    def __init__(self, make_call: Callable[[], Callable[[str, dict], dict]], *, endpoint: str,
                 threads: int | None = None):
        self.endpoint = endpoint
        self.workers = max(1, threads or DEFAULT_REMOTE_THREADS)
        self._make_call = make_call
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="faceaudit-target")

    def _job(self, job: Job) -> Outcome:
        call = getattr(self._local, "call", None)
        if call is None:
            call = self._local.call = self._make_call()
        return run_job(call, job)

    def submit(self, job: Job) -> Future:
        return self._pool.submit(self._job, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def botocore_call(client) -> Callable[[str, dict], dict]:
    """``call("IndexFaces", request)`` -> ``client.index_faces(**request)``."""
    from botocore import xform_name

    def call(operation: str, request: dict) -> dict:
        return getattr(client, xform_name(operation))(**request)
    return call


def botocore_backend(endpoint_url: str | None, *, region: str, access_key_id: str | None = None,
                     secret_access_key: str | None = None, session_token: str | None = None,
                     threads: int | None = None, max_attempts: int = 10) -> ThreadBackend:
    """A ThreadBackend over botocore Rekognition clients, one per thread.

    ``endpoint_url`` None means Amazon's own endpoint for ``region``; keys None
    means botocore's default credential chain (environment, profiles, roles).
    """
    import botocore.config
    import botocore.session

    threads = max(1, threads or DEFAULT_REMOTE_THREADS)
    # Retries: botocore's "adaptive" mode retries throttling and transient errors with
    # exponential backoff and adds a client-side rate limiter -- preferred to a
    # hand-written retry loop. (The limiter is per client, i.e. per thread here.)
    config = botocore.config.Config(retries={"mode": "adaptive", "max_attempts": max_attempts},
                                    max_pool_connections=max(10, threads), read_timeout=120,
                                    connect_timeout=30)

    def make_call():
        # A session per thread: botocore sessions are not safe to share while creating clients.
        session = botocore.session.get_session()
        client = session.create_client(
            "rekognition", region_name=region, endpoint_url=endpoint_url, config=config,
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            aws_session_token=session_token)
        return botocore_call(client)

    endpoint = endpoint_url or f"aws:{region}"
    return ThreadBackend(make_call, endpoint=endpoint, threads=threads)


# --- the target --------------------------------------------------------------------------
def detection_from_response(value: dict) -> Detection:
    """Detection of the largest face (by BoundingBox area) of a DetectFaces response."""
    if "Error" in value:
        return Detection(face_count=0, error=value["Error"].get("Code") or "Unknown")
    faces = value.get("FaceDetails") or []
    if not faces:
        return Detection(face_count=0)

    def area(detail: dict) -> float:
        box = detail.get("BoundingBox") or {}
        return float(box.get("Width") or 0.0) * float(box.get("Height") or 0.0)

    largest = max(faces, key=area)  # max keeps the first of equal areas
    gender = largest.get("Gender") or {}
    age = largest.get("AgeRange") or {}
    value_ = gender.get("Value")
    return Detection(
        face_count=len(faces),
        gender=value_.lower() if isinstance(value_, str) else None,
        gender_confidence=None if gender.get("Confidence") is None else float(gender["Confidence"]),
        age_low=None if age.get("Low") is None else float(age["Low"]),
        age_high=None if age.get("High") is None else float(age["High"]),
    )


def _matches(response: dict) -> list[list]:
    """[[ExternalImageId, Similarity], ...] of a search response, in its order."""
    return [[m.get("Face", {}).get("ExternalImageId"), float(m["Similarity"])]
            for m in response.get("FaceMatches", [])]


class _Run:
    """The distinct images one similarities() or search() call indexes, named by content."""

    def __init__(self, fingerprint: str, kind: str, paths: Sequence[str]):
        self.paths = list(dict.fromkeys(paths))
        self.position = {p: i for i, p in enumerate(self.paths)}
        self.shas: list[str | None] = []
        for path in self.paths:
            try:
                self.shas.append(file_sha256(path))
            except OSError:
                self.shas.append(None)
        self.key = cache_key(RUN_VERSION, fingerprint, kind, self.shas, INDEX_REQUEST)

    @staticmethod
    def external_id(i: int) -> str:
        return f"i{i}"

    @staticmethod
    def index_of(external_id: str | None) -> int | None:
        if isinstance(external_id, str) and external_id.startswith("i") and external_id[1:].isdigit():
            return int(external_id[1:])
        return None

    def collection_key(self) -> str:
        return cache_key(self.key, "collection")

    def index_key(self, i: int) -> str:
        return cache_key(self.key, "IndexFaces", i)

    def search_key(self, i: int, partners: Sequence[int]) -> str:
        return cache_key(self.key, "SearchFaces", i, SEARCH_MAX_FACES, list(partners))


class RekognitionTarget(Target):
    """A Target over a Backend (see the module docstring)."""

    def __init__(self, backend: Backend, *, name: str | None = None, cache: ResponseCache | None = None,
                 progress: bool = True, keep_interrupted: bool = True):
        self.backend = backend
        self.name = name or backend.endpoint
        self.cache = cache if cache is not None else ResponseCache(None)
        self.progress = progress
        self.keep_interrupted = keep_interrupted
        self.calls: Counter = Counter()  # operations sent to the target
        self.cache_hits: Counter = Counter()
        self._model_version: str | None = None
        self._collections: set[str] = set()  # created or reused, not yet deleted
        self._parked: set[str] = set()  # kept for a rerun of an interrupted run
        self._closed = False

    # -- identity ---------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        """The target's FaceModelVersion, read from CreateCollection on a probe collection."""
        if self._model_version is None:
            collection_id = self._new_collection_id()
            response = self._admin("CreateCollection", {"CollectionId": collection_id})
            try:
                self._model_version = str(response.get("FaceModelVersion") or "unknown")
            finally:
                self._delete_collection(collection_id)
        return self._model_version

    @property
    def fingerprint(self) -> str:
        """What cached answers are valid for: the endpoint and its model version."""
        parts = [self.backend.kind, self.backend.endpoint, self.model_version]
        if self.backend.kind == "local":  # the engine is this very package
            from faceaudit import __version__
            parts.append(__version__)
        return cache_key(*parts)

    def describe(self) -> dict:
        return {
            "kind": self.backend.kind, "name": self.name, "endpoint": self.backend.endpoint,
            "model_version": self.model_version, "workers": self.backend.workers,
            "parallelism": "processes" if self.backend.kind == "local" else "threads",
            "cache_dir": None if self.cache.directory is None else str(self.cache.directory),
            "calls": dict(sorted(self.calls.items())), "cache_hits": dict(sorted(self.cache_hits.items())),
        }

    # -- calls ------------------------------------------------------------------------
    def _admin(self, operation: str, request: dict, *, allow: tuple[str, ...] = ()) -> dict:
        """One call that must succeed (or fail with a code in ``allow``: returns {"Error": ...})."""
        self.calls[operation] += 1
        outcome = self.backend.run(Job(operation, request))
        if outcome[0] == "ok":
            return outcome[1]
        if outcome[1] in allow:
            return {"Error": {"Code": outcome[1], "Message": outcome[2]}}
        raise TargetError(outcome[1], outcome[2], operation)

    def _run_jobs(self, jobs: list[Job], description: str, done: Callable[[int, Outcome], None]) -> None:
        """Run jobs in parallel; ``done(i, outcome)`` in this thread as each finishes."""
        if not jobs:
            return
        for job in jobs:
            self.calls[job.operation] += 1
        futures: dict[Future, int] = {}
        try:
            for i, job in enumerate(jobs):
                futures[self.backend.submit(job)] = i
            with _progress(self.progress, description, len(jobs)) as advance:
                for future in as_completed(futures):
                    done(futures[future], future.result())
                    advance()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    @staticmethod
    def _answer(outcome: Outcome, operation: str) -> tuple[dict, bool]:
        """(value, cacheable): the response, or {"Error": ...} for an image error; raises otherwise."""
        if outcome[0] == "ok":
            return outcome[1], True
        code, message = outcome[1], outcome[2]
        if code in IMAGE_ERRORS:
            return {"Error": {"Code": code, "Message": message}}, code != UNREADABLE
        raise TargetError(code, message, operation)

    # -- detect -----------------------------------------------------------------------
    def detect(self, paths: Sequence[str]) -> dict[str, Detection]:
        paths = list(dict.fromkeys(str(p) for p in paths))
        fingerprint = self.fingerprint
        results: dict[str, Detection] = {}
        pending: list[tuple[str, str]] = []
        for path in paths:
            try:
                sha = file_sha256(path)
            except OSError:
                results[path] = Detection(face_count=0, error=UNREADABLE)
                continue
            key = cache_key(fingerprint, "DetectFaces", sha, DETECT_REQUEST)
            cached = self.cache.get(key)
            if cached is not None:
                self.cache_hits["DetectFaces"] += 1
                results[path] = detection_from_response(cached)
            else:
                pending.append((path, key))

        def done(i: int, outcome: Outcome) -> None:
            path, key = pending[i]
            value, cacheable = self._answer(outcome, "DetectFaces")
            if cacheable:
                self.cache.put(key, "DetectFaces", value)
            results[path] = detection_from_response(value)

        jobs = [Job("DetectFaces", dict(DETECT_REQUEST), path) for path, _ in pending]
        self._run_jobs(jobs, f"DetectFaces on {len(jobs)} images ({self.name})", done)
        return {path: results[path] for path in paths}

    # -- collections and runs ----------------------------------------------------------
    @staticmethod
    def _new_collection_id() -> str:
        return COLLECTION_PREFIX + uuid.uuid4().hex[:8]

    def _delete_collection(self, collection_id: str) -> None:
        self._admin("DeleteCollection", {"CollectionId": collection_id}, allow=("ResourceNotFoundException",))
        self._collections.discard(collection_id)
        self._parked.discard(collection_id)

    def _collection_for(self, run: _Run) -> tuple[str, str]:
        """(collection id, generation) of the run: the collection recorded for it if it still
        exists, else a new one. The generation changes whenever the collection is (re)created
        empty, so that IndexFaces outcomes recorded for an earlier one are not trusted."""
        recorded = self.cache.get(run.collection_key())
        if recorded is not None:
            collection_id = recorded["CollectionId"]
            answer = self._admin("CreateCollection", {"CollectionId": collection_id},
                                 allow=("ResourceAlreadyExistsException",))
            generation = recorded["Generation"] if "Error" in answer else uuid.uuid4().hex
        else:
            collection_id, generation = self._new_collection_id(), uuid.uuid4().hex
            self._admin("CreateCollection", {"CollectionId": collection_id})
        self.cache.put(run.collection_key(), "collection", {"CollectionId": collection_id, "Generation": generation})
        self._collections.add(collection_id)
        return collection_id, generation

    def _finish(self, run: _Run) -> None:
        """Delete the run's collection (if one is recorded) and forget it."""
        recorded = self.cache.get(run.collection_key())
        if recorded is not None:
            self._delete_collection(recorded["CollectionId"])
            self.cache.delete(run.collection_key())

    def _interrupted(self, collection_id: str | None) -> None:
        resumable = self.cache.persistent and (self.backend.kind != "local"
                                               or getattr(self.backend, "persistent_store", False))
        if collection_id is not None and self.keep_interrupted and resumable:
            self._parked.add(collection_id)

    def _statuses(self, run: _Run) -> list[dict | None]:
        """Each image's IndexFaces outcome in this run, as cached:
        {"CollectionId", "Generation", "FaceIds", "Error"}."""
        statuses: list[dict | None] = []
        for i, sha in enumerate(run.shas):
            if sha is None:
                statuses.append({"CollectionId": None, "Generation": None, "FaceIds": [], "Error": UNREADABLE})
            else:
                statuses.append(self.cache.get(run.index_key(i)))
        return statuses

    def _index(self, run: _Run, statuses: list[dict | None], collection: tuple[str, str], what: str) -> None:
        """IndexFaces every image not known to be in the collection (updates ``statuses``)."""
        collection_id, generation = collection
        todo = [i for i, status in enumerate(statuses)
                if status is None or (status["FaceIds"] and status.get("Generation") != generation)]
        self.cache_hits["IndexFaces"] += len(run.paths) - len(todo)

        def done(n: int, outcome: Outcome) -> None:
            i = todo[n]
            value, cacheable = self._answer(outcome, "IndexFaces")
            face_ids = [record["Face"]["FaceId"] for record in value.get("FaceRecords", [])]
            status = {"CollectionId": collection_id, "Generation": generation, "FaceIds": face_ids,
                      "Error": value["Error"]["Code"] if "Error" in value else None}
            if cacheable:
                self.cache.put(run.index_key(i), "IndexFaces", status)
            statuses[i] = status

        jobs = [Job("IndexFaces", {"CollectionId": collection_id, "ExternalImageId": run.external_id(i),
                                   **INDEX_REQUEST}, run.paths[i]) for i in todo]
        self._run_jobs(jobs, f"IndexFaces: {len(jobs)} {what} images into {collection_id} ({self.name})", done)

    # -- similarities -------------------------------------------------------------------
    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        pairs = [(str(a), str(b)) for a, b in pairs]
        run = _Run(self.fingerprint, "similarities", [p for pair in pairs for p in pair])
        # Each path_a is searched; of its answer only the similarities to its partners are kept.
        partners: dict[int, list[int]] = {}
        for a, b in pairs:
            partners.setdefault(run.position[a], []).append(run.position[b])
        partners = {i: sorted(set(js)) for i, js in partners.items()}
        searched = list(partners)
        statuses = self._statuses(run)
        responses: dict[int, dict[int, float]] = {}  # searched image -> {partner: similarity}
        for i in searched:
            cached = self.cache.get(run.search_key(i, partners[i]))
            if cached is not None:
                responses[i] = {j: similarity for j, similarity in cached["Similarities"]}
        self.cache_hits["SearchFaces"] += len(responses)

        def unsearched() -> list[int]:
            return [i for i in searched if i not in responses and (statuses[i] is None or statuses[i]["FaceIds"])]

        if any(status is None for status in statuses) or unsearched():
            collection_id = None
            try:
                collection = self._collection_for(run)
                collection_id = collection[0]
                self._index(run, statuses, collection, "pair")
                todo = unsearched()

                def done(n: int, outcome: Outcome) -> None:
                    if outcome[0] != "ok":
                        raise TargetError(outcome[1], outcome[2], "SearchFaces")
                    i = todo[n]
                    wanted, found = set(partners[i]), {}
                    for external_id, similarity in _matches(outcome[1]):
                        j = run.index_of(external_id)
                        # a face indexed twice (see the module docstring) is one match
                        if j in wanted and j != i and similarity > found.get(j, -1.0):
                            found[j] = similarity
                    self.cache.put(run.search_key(i, partners[i]), "SearchFaces",
                                   {"Similarities": sorted(found.items())})
                    responses[i] = found

                jobs = [Job("SearchFaces", {"CollectionId": collection_id, "FaceId": statuses[i]["FaceIds"][0],
                                            "FaceMatchThreshold": 0.0, "MaxFaces": SEARCH_MAX_FACES})
                        for i in todo]
                self._run_jobs(jobs, f"SearchFaces for {len(jobs)} images ({self.name})", done)
            except BaseException:
                self._interrupted(collection_id)
                raise
        self._finish(run)  # also removes a collection left by an interrupted earlier run

        results: list[float | None] = []
        for a, b in pairs:
            i, j = run.position[a], run.position[b]
            if not statuses[i]["FaceIds"] or not statuses[j]["FaceIds"]:
                results.append(None)
            elif i == j:
                results.append(100.0)
            else:
                value = responses[i].get(j)
                if value is None and j in responses:
                    value = responses[j].get(i)
                results.append(0.0 if value is None else value)  # outside the top 4096: see docstring
        return results

    # -- search -------------------------------------------------------------------------
    def search(self, gallery: Sequence[str], probes: Sequence[str], max_results: int = 50
               ) -> dict[str, list[Match]]:
        if not 1 <= max_results <= SEARCH_MAX_FACES:
            raise ValueError(f"max_results must be between 1 and {SEARCH_MAX_FACES}")
        run = _Run(self.fingerprint, "search", [str(p) for p in gallery])
        probes = list(dict.fromkeys(str(p) for p in probes))
        answers: dict[str, dict] = {}
        pending: list[tuple[str, str]] = []
        for probe in probes:
            try:
                sha = file_sha256(probe)
            except OSError:
                answers[probe] = {"Error": {"Code": UNREADABLE}}
                continue
            key = cache_key(run.key, "SearchFacesByImage", sha, max_results)
            cached = self.cache.get(key)
            if cached is not None:
                self.cache_hits["SearchFacesByImage"] += 1
                answers[probe] = cached
            else:
                pending.append((probe, key))

        if pending:
            collection_id = None
            try:
                collection = self._collection_for(run)
                collection_id = collection[0]
                self._index(run, self._statuses(run), collection, "gallery")

                def done(n: int, outcome: Outcome) -> None:
                    probe, key = pending[n]
                    value, cacheable = self._answer(outcome, "SearchFacesByImage")
                    if "Error" not in value:
                        value = {"Matches": _matches(value)}
                    if cacheable:
                        self.cache.put(key, "SearchFacesByImage", value)
                    answers[probe] = value

                jobs = [Job("SearchFacesByImage", {"CollectionId": collection_id, "FaceMatchThreshold": 0.0,
                                                   "MaxFaces": max_results, "QualityFilter": "NONE"}, probe)
                        for probe, _ in pending]
                self._run_jobs(jobs, f"SearchFacesByImage for {len(jobs)} probes ({self.name})", done)
            except BaseException:
                self._interrupted(collection_id)
                raise
        self._finish(run)

        results: dict[str, list[Match]] = {}
        for probe in probes:
            matches: list[Match] = []
            seen: set[int] = set()
            for external_id, similarity in answers[probe].get("Matches", []):
                j = run.index_of(external_id)
                if j is None or j in seen or j >= len(run.paths):
                    continue
                seen.add(j)
                matches.append(Match(path=run.paths[j], similarity=similarity))
            matches.sort(key=lambda m: -m.similarity)  # stable: the target's order among equals
            results[probe] = matches
        return results

    # -- close ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for collection_id in sorted(self._collections - self._parked):
                try:
                    self._delete_collection(collection_id)
                except Exception:  # best effort: the target may be what failed
                    pass
        finally:
            self.backend.close()
            self.cache.close()

    def __enter__(self) -> "RekognitionTarget":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _progress:
    """A rich progress bar (or nothing): ``with _progress(on, text, total) as advance: advance()``."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self._progress = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        self._progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                                  TimeRemainingColumn(), transient=True)
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
