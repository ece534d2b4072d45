"""How a Rekognition-like call reaches the system under audit: jobs, outcomes, backends.

A :class:`Job` is one operation; running it gives an :data:`Outcome`, either
``("ok", response)`` or ``("error", code, message)``. A :class:`Backend` runs jobs
and returns Futures of outcomes:

* :class:`ThreadBackend` -- a thread pool (default 4 threads), one client per
  thread; :func:`botocore_backend` makes one for an endpoint URL or for
  Amazon's own endpoint. Throttling is retried by botocore's own "adaptive"
  retry mode (exponential backoff plus a client-side rate limiter), not by a
  loop written here.
* :class:`faceaudit.audit.targets.local.LocalBackend` -- faceaudit's engine in
  worker processes.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

#: A Rekognition-like call: ``call("IndexFaces", request) -> response`` (boto3's Python shapes).
Call = Callable[[str, dict[str, Any]], dict[str, Any]]

#: Errors that are the target's answer about one image, not a failure of the audit.
IMAGE_ERRORS = frozenset({
    "InvalidImageFormatException", "ImageTooLargeException", "InvalidParameterException",
    "InvalidS3ObjectException", "ValidationException",
    "UnreadableImageFile",  # the file could not be read from disk (not sent; never cached)
})
UNREADABLE = "UnreadableImageFile"

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
    request: dict[str, Any]
    image: str | None = None


#: ("ok", response) or ("error", code, message)
Outcome = tuple[Any, ...]


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


def run_job(call: Call, job: Job) -> Outcome:
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
                    ("Value '<0 bytes>' at 'image.bytes' failed to satisfy constraint: "
                     "Member must have length greater than or equal to 1"))
        request = {**job.request, "Image": {"Bytes": data}}
    else:
        request = job.request
    try:
        response = call(job.operation, request)
    except Exception as exc:
        known = error_of(exc)
        if known is None:
            raise
        return ("error", *known)
    response = dict(response)
    response.pop("ResponseMetadata", None)
    return ("ok", response)


# --- backends ---------------------------------------------------------------------------
class Backend(ABC):
    """Where calls run. ``submit`` returns a Future of an Outcome."""

    kind: str  # "local" or "rekognition"
    endpoint: str  # what the fingerprint and the report name
    workers: int
    # How the target's collections are searched, for the report: "exact" when the audit
    # knows (its own local store), None when the service decides and cannot tell us.
    search_mode: str | None = None

    @property
    def engine_endpoint(self) -> str:
        """The endpoint less what changes only similarities (a local score normalization):
        what cached detections and indexed faces depend on. A remote endpoint is one thing."""
        return self.endpoint

    @abstractmethod
    def submit(self, job: Job) -> Future[Outcome]:
        ...

    def run(self, job: Job) -> Outcome:
        return self.submit(job).result()

    def close(self) -> None:  # noqa: B027 (optional: a backend without resources has nothing to close)
        pass


class ThreadBackend(Backend):
    """Calls on a thread pool, each thread with its own ``call`` from ``make_call()``."""

    kind = "rekognition"

    def __init__(self, make_call: Callable[[], Call], *, endpoint: str,
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

    def submit(self, job: Job) -> Future[Outcome]:
        return self._pool.submit(self._job, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def botocore_call(client: Any) -> Call:
    """``call("IndexFaces", request)`` -> ``client.index_faces(**request)``."""
    from botocore import xform_name

    def call(operation: str, request: dict[str, Any]) -> dict[str, Any]:
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

    def make_call() -> Call:
        # A session per thread: botocore sessions are not safe to share while creating clients.
        session = botocore.session.get_session()
        client = session.create_client(
            "rekognition", region_name=region, endpoint_url=endpoint_url, config=config,
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            aws_session_token=session_token)
        return botocore_call(client)

    endpoint = endpoint_url or f"aws:{region}"
    return ThreadBackend(make_call, endpoint=endpoint, threads=threads)
