"""The HTTP face of faceaudit: an ASGI app speaking Rekognition's wire protocol.

One route matters: ``POST /`` with ``X-Amz-Target: RekognitionService.<Operation>``,
exactly what boto3 sends to ``endpoint_url``.  ``GET /`` answers a small
health document without authentication.  For every other request, in order:

1. a body larger than any Rekognition request can be (``max_body_bytes``) is
   refused from its ``Content-Length`` before it is read
   (ImageTooLargeException), and a body without one is cut off at that size;
2. the SigV4 signature is verified over the raw path, query, headers and body
   (faceaudit.server.sigv4) -- nothing else happens to a request that fails;
3. the operation is looked up from ``X-Amz-Target`` and the body decoded and
   validated against botocore's model of it (faceaudit.server.wire);
4. ``service.call(operation, request)`` runs in a worker thread (engine work is
   CPU-bound and blocking), and its answer or error is encoded back.

Every response carries ``x-amzn-RequestId`` (boto3's ``ResponseMetadata.RequestId``)
and each request is logged as one line on the ``faceaudit.server`` logger,
``dispatched=yes`` only when it reached the service.

The app does not depend on any web framework; uvicorn serves it
(faceaudit.server.runner).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from faceaudit.errors import (
    ImageTooLargeException,
    InternalServerError,
    InvalidParameterException,
    RekognitionError,
)
from faceaudit.server import sigv4
from faceaudit.server.wire import CONTENT_TYPE, RekognitionProtocol, UnknownOperationException

__all__ = [
    "DEFAULT_THREADS",
    "MAX_BODY_BYTES",
    "RekognitionApp",
    "Outcome",
    "build_app",
    "create_app_from_env",
]

# The largest valid Rekognition request is CompareFaces with two 5 MB images:
# 2 x 6.99 MB of base64 plus a little JSON. Anything bigger is refused unread.
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_THREADS = 8
log = logging.getLogger("faceaudit.server")


class Service(Protocol):
    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Outcome:
    """What became of one request (also what the access log line shows)."""

    status: int
    body: bytes
    request_id: str
    operation: str | None = None
    error: str | None = None
    dispatched: bool = False  # True once the request reached service.call
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Disconnected(Exception):
    pass


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RekognitionApp:
    """ASGI app: SigV4-authenticated Rekognition JSON 1.1 in front of ``service.call``.

    ``credentials`` is one key pair or a mapping from access key id to key pair
    (see sigv4.verify_request); ``region`` restricts the credential scope's
    region (``None``: any).  ``on_shutdown`` callables run at lifespan shutdown
    after in-flight calls finished (e.g. ``store.close``).
    """

    def __init__(self, service: Service, credentials: sigv4.Credentials | Mapping[str, sigv4.Credentials],
                 *, protocol: RekognitionProtocol | None = None, region: str | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, threads: int = DEFAULT_THREADS,
                 on_shutdown: Iterable[Callable[[], Any]] = ()):
        self.service = service
        self.credentials = credentials
        self.protocol = protocol or RekognitionProtocol.default()
        self.region = region
        self.max_body_bytes = max_body_bytes
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads),
                                           thread_name_prefix="faceaudit-call")
        self.on_shutdown = list(on_shutdown)
        self._closed = False

    # -- the request pipeline (synchronous; runs in a worker thread) ------------------
    def handle(self, method: str, raw_path: str, query_string: str,
               headers: list[tuple[bytes, bytes]], body: bytes, request_id: str) -> Outcome:
        """Authenticate, decode, call and encode one request; never raises."""
        outcome = Outcome(200, b"", request_id)
        try:
            sigv4.verify_request(method, raw_path, query_string, headers, body, self.credentials,
                                 region=self.region)
            path = raw_path.split("?", 1)[0]
            if method != "POST" or path != "/":
                raise UnknownOperationException(
                    f"Rekognition operations are 'POST /' requests, not '{method} {path[:100]}'")
            operation = self.protocol.operation(_header(headers, b"x-amz-target"))
            outcome.operation = operation.name
            supported = getattr(self.service, "operations", None)
            if supported is not None and operation.name not in supported:
                raise InvalidParameterException(
                    f"Operation {operation.name} is not supported by faceaudit")
            request = self.protocol.decode_request(operation, body)
            outcome.dispatched = True
            response = self.service.call(operation.name, request)
            outcome.body = self.protocol.encode_response(operation, response)
        except RekognitionError as error:
            self._fail(outcome, error)
        except Exception:  # a bug: answer InternalServerError, keep the traceback in the log
            log.exception("request_id=%s op=%s failed", request_id, outcome.operation)
            self._fail(outcome, InternalServerError("Internal server error"))
        return outcome

    def _fail(self, outcome: Outcome, error: RekognitionError) -> None:
        outcome.status, outcome.body = self.protocol.encode_error(error)
        outcome.error = error.code
        outcome.headers.append(("x-amzn-ErrorType", error.code))

    # -- ASGI ---------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # anything else (websocket) is not served

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.close)
                except Exception as exc:  # report, but let the server exit
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        """Wait for running calls, then run the shutdown hooks (closing the store). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(wait=True)
        for hook in self.on_shutdown:
            hook()
        log.info("faceaudit: stopped")

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        method = scope["method"]
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        raw_path = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
        query_string = scope.get("query_string", b"").decode("latin-1")

        if method in ("GET", "HEAD") and raw_path == "/" and not query_string:
            body = json.dumps({"service": "faceaudit", "status": "ok"}).encode()
            await self._send(send, Outcome(200, body, request_id), content_type="application/json",
                             head=method == "HEAD")
            return

        close = False
        try:
            body = await self._read_body(scope, headers, receive)
        except RekognitionError as error:  # too large: answered without reading the rest
            outcome = Outcome(0, b"", request_id)
            self._fail(outcome, error)
            close = True
        except _Disconnected:
            return
        else:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(
                self.executor, self.handle, method, raw_path, query_string, headers, body, request_id)
        await self._send(send, outcome, close=close)
        client = scope.get("client") or ("-", 0)
        log.info("%s %s op=%s status=%d error=%s dispatched=%s ms=%.1f request_id=%s",
                 client[0], method, outcome.operation or "-", outcome.status, outcome.error or "-",
                 "yes" if outcome.dispatched else "no", (time.perf_counter() - started) * 1000,
                 request_id)

    async def _read_body(self, scope: dict, headers: list[tuple[bytes, bytes]],
                         receive: Callable) -> bytes:
        limit = self.max_body_bytes
        declared = _header(headers, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise ImageTooLargeException(
                f"Request body of {int(declared)} bytes exceeds the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ImageTooLargeException(f"Request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _send(self, send: Callable, outcome: Outcome, *, content_type: str = CONTENT_TYPE,
                    close: bool = False, head: bool = False) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(outcome.body)).encode()),
            (b"x-amzn-requestid", outcome.request_id.encode()),
        ]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in outcome.headers]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else outcome.body})


# ------------------------------------------------------------------ building the app


def build_app(data_dir: str | os.PathLike, *, bucket_dir: str | None = None,
              threads: int = DEFAULT_THREADS, region: str | None = None,
              credentials: sigv4.Credentials | None = None) -> RekognitionApp:
    """The real thing: default engine + EmbeddedStore(data_dir) + RekognitionService."""
    from faceaudit.engine import default_engine
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.server.credentials import load_or_create
    from faceaudit.storage import EmbeddedStore

    if credentials is None:
        credentials = load_or_create(data_dir).credentials
    engine = default_engine()
    store = EmbeddedStore(data_dir)
    service = RekognitionService(engine, store, bucket_dir=bucket_dir)
    hooks = [store.close] if hasattr(store, "close") else []
    return RekognitionApp(service, credentials, region=region, threads=threads, on_shutdown=hooks)


# Settings handed to worker processes (uvicorn --workers starts each from an import string).
ENV_DATA_DIR = "FACEAUDIT_SERVE_DATA_DIR"
ENV_BUCKET_DIR = "FACEAUDIT_SERVE_BUCKET_DIR"
ENV_THREADS = "FACEAUDIT_SERVE_THREADS"
ENV_REGION = "FACEAUDIT_SERVE_REGION"


def configure_logging() -> None:
    """One line per request (and server events) on stderr, for ``faceaudit serve`` and its workers."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def create_app_from_env() -> RekognitionApp:
    """App factory for uvicorn worker processes; settings come from FACEAUDIT_SERVE_* variables."""
    configure_logging()
    data_dir = os.environ[ENV_DATA_DIR]
    return build_app(data_dir, bucket_dir=os.environ.get(ENV_BUCKET_DIR) or None,
                     threads=int(os.environ.get(ENV_THREADS, DEFAULT_THREADS)),
                     region=os.environ.get(ENV_REGION) or None)
