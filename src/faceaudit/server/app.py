"""The HTTP face of faceaudit: an ASGI app speaking Rekognition's wire protocol.

One route matters: ``POST /`` with ``X-Amz-Target: RekognitionService.<Operation>``,
exactly what boto3 sends to ``endpoint_url`` -- or ``FaceAuditService.<Operation>``,
faceaudit's own operations (blind review), decoded by the same protocol from faceaudit's
model and answered by a second service object (``faceaudit``) that is told who asks.
``GET /`` answers a small health document without authentication, and paths under
``/console`` go to the web console when one is attached (:func:`attach_console`;
faceaudit.console), which reaches the operations through :meth:`RekognitionApp.call`.
For every other request, in order:

1. a body larger than any Rekognition request can be (``max_body_bytes``) is
   refused from its ``Content-Length`` before it is read
   (ImageTooLargeException), and a body without one is cut off at that size;
2. *before the body is read*, the signature information is checked for
   everything that needs no body (sigv4.preverify): present and well formed,
   an active access key (looked up in the key store on every request, so a
   revoked key is refused at once by every process), a fresh date, and the signing policy
   (``SIGNING_POLICY``: ``X-Amz-Target``, ``Content-Type`` and every
   ``x-amz-*`` header signed; presigned requests only for read-only
   operations and for at most 15 minutes) -- an unauthenticated request
   costs a header parse and is answered with the connection closed;
3. the body is admitted against a budget of body bytes held in memory across
   all connections (``max_inflight_body_bytes``; over it: ThrottlingException
   with ``Retry-After``, at once) and read with an idle and a total timeout
   (RequestTimeoutException);
4. the signature itself is verified over the raw path, query, headers and body
   (sigv4.verify_signature) -- nothing else happens to a request that fails;
5. the operation is looked up from ``X-Amz-Target``, the key's role checked
   against it (faceaudit.access.roles; AccessDeniedException), and the body
   decoded and validated against botocore's model of it (faceaudit.server.wire);
6. the accountability layer's ``guard.call(caller, operation, request, facts)``
   (faceaudit.accountability.guard: moratoria, use policies, budgets; the caller is the
   verified key with the headers its signature covers) -- or, for an app built on a bare
   service, ``service.call(operation, request)`` -- runs in a worker thread (engine work is
   CPU-bound and blocking), and its answer or error is encoded back, with the guard's
   response headers (``x-faceaudit-review-item``).  A full
   disk (SQLite's "database or disk is full", ENOSPC, EDQUOT) is answered as
   InternalServerError saying the server is out of storage, and logged with
   the data directory;
7. before the answer is sent, a request whose signature was verified (allowed or
   refused) is appended to the search log and the append is durable
   (faceaudit.accountability.searchlog); if it cannot be, the client gets
   InternalServerError instead of the answer.  A request refused before its
   signature was verified is only counted, and the counts are written as one
   record a minute: garbage costs no disk flush.

Slow or silent connections (headers never finished) are the HTTP protocol's
business: faceaudit.server.protocol.

Every response carries ``x-amzn-RequestId`` (boto3's ``ResponseMetadata.RequestId``)
and each request is logged as one line on the ``faceaudit.server`` logger,
``dispatched=yes`` only when it reached the service, with the key's name, role
and unit once its signature is verified and the reason of a refusal
(:meth:`RekognitionApp.record_request`, which every answered request passes
through once: the search log of issue 10 hooks in there).

The app does not depend on any web framework; uvicorn serves it
(faceaudit.server.runner).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.model import OperationModel

from faceaudit.access import AccessKey, KeyStore
from faceaudit.accountability.context import Caller, Facts
from faceaudit.accountability.guard import GuardedService
from faceaudit.accountability.searchlog import (
    SearchLog,
    describe_request,
    describe_response,
    request_record,
)
from faceaudit.errors import (
    ImageTooLargeException,
    InternalServerError,
    InvalidParameterException,
    OutOfStorageError,
    RekognitionError,
    RequestTimeoutException,
    ThrottlingException,
)
from faceaudit.server import sigv4
from faceaudit.server.access import KeyDenied, StaticKeys, StoreKeys, authorize, key_of
from faceaudit.server.wire import (
    CONTENT_TYPE,
    FACEAUDIT_TARGET_PREFIX,
    JsonProtocol,
    UnknownOperationException,
)
from faceaudit.settings import DEFAULT_SERVE_THREADS, SERVE_DATA_DIR_ENV, Settings

__all__ = [
    "BODY_IDLE_TIMEOUT",
    "BODY_TOTAL_TIMEOUT",
    "CONSOLE_PATH",
    "DEFAULT_THREADS",
    "MAX_BODY_BYTES",
    "MAX_INFLIGHT_BODY_BYTES",
    "SIGNING_POLICY",
    "Outcome",
    "RekognitionApp",
    "RequestRecord",
    "attach_console",
    "build_app",
    "create_app_from_env",
]

# The largest valid Rekognition request is CompareFaces with two 5 MB images:
# 2 x 6.99 MB of base64 plus a little JSON. Anything bigger is refused unread.
MAX_BODY_BYTES = 16 * 1024 * 1024
# Body bytes held in memory across all connections: four largest requests, or
# hundreds of typical ones.  Bounds what clients (even ones that only know an
# access key id) can make the server hold.
MAX_INFLIGHT_BODY_BYTES = 4 * MAX_BODY_BYTES
BODY_IDLE_TIMEOUT = 10.0  # seconds without a body byte before giving up on a request
BODY_TOTAL_TIMEOUT = 60.0  # a 16 MB body at >= 280 kB/s
RETRY_AFTER_SECONDS = 1
DEFAULT_THREADS = DEFAULT_SERVE_THREADS
# What must be signed for the server to act on it (docs/security.md).  The
# 15-minute presign lifetime equals the clock-skew window of header signatures.
SIGNING_POLICY = sigv4.SigningPolicy(
    must_sign=frozenset({"content-type", "x-amz-target"}),
    sign_all_amz=True,
    allow_unsigned_payload=False,
    max_presign_expires=15 * 60,
)
# Presigned URLs travel in logs and browser histories: only operations that change
# nothing may be presigned.  A prefix list, so an operation added later is refused.
READ_ONLY_PREFIXES = ("Describe", "List", "Search", "Detect", "Compare", "Get")
# Where `faceaudit serve` mounts the web console (faceaudit.console).
CONSOLE_PATH = "/console"
# What a full disk or quota looks like from SQLite and from the OS.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
log = logging.getLogger("faceaudit.server")


class Service(Protocol):
    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]: ...


class CallerService(Protocol):
    """faceaudit's own operations (FaceAuditService.*): each call knows who asks."""

    operations: frozenset[str]

    def call(self, caller: Caller, operation: str, request: dict[str, Any],
             facts: Facts | None = None) -> dict[str, Any]: ...


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
    key: AccessKey | None = None  # set once the signature is verified: only a proven signer is named
    reason: str | None = None  # why a request was refused, for the log (never sent to the client)
    facts: Facts | None = None  # what the accountability layer gathered for the search log (signature verified)


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the log line (and later the search log) records it."""

    request_id: str
    at: datetime  # when it arrived, UTC
    client: str
    method: str
    operation: str | None
    status: int
    error: str | None
    reason: str | None
    dispatched: bool
    key: AccessKey | None
    ms: float


class _Disconnected(Exception):
    pass


class _Reservation:
    """One request's share of the app's in-flight body budget (event loop thread only)."""

    def __init__(self, app: RekognitionApp):
        self.app = app
        self.size = 0

    def grow(self, size: int) -> None:
        app = self.app
        if app.inflight_body_bytes + size > app.max_inflight_body_bytes:
            raise ThrottlingException(
                "Too many request bytes are in flight on this server; retry shortly")
        app.inflight_body_bytes += size
        self.size += size

    def release(self) -> None:
        self.app.inflight_body_bytes -= self.size
        self.size = 0


def is_storage_full(error: BaseException) -> bool:
    """True for SQLite's "database or disk is full" and OS ENOSPC/EDQUOT, also when wrapped."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # the storage layer may wrap errors
        seen.add(id(current))
        if isinstance(current, sqlite3.OperationalError) and "full" in str(current).lower():
            return True
        if isinstance(current, sqlite3.DatabaseError) and getattr(
                current, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def _describe_refused(facts: Facts, body: bytes) -> None:
    """A request refused before it was decoded (e.g. by role) still names its collection and
    thresholds in the log: read them from the signed JSON body, best effort, no image decoded."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return
    if not isinstance(request, dict):
        return
    for name in ("Image", "SourceImage", "TargetImage"):  # the wire's base64, as the decoder would read it
        image = request.get(name)
        if isinstance(image, dict) and isinstance(image.get("Bytes"), str):
            try:
                image["Bytes"] = base64.b64decode(image["Bytes"], validate=True)
            except ValueError:
                del image["Bytes"]
    describe_request(facts, request)


def _signed_headers(pending: sigv4.PendingRequest) -> dict[str, str]:
    """Lower-case name -> value of the headers the signature covers (repeats joined by ',')."""
    return {name.lower(): ",".join(v.strip() for v in pending.index.get(name.lower(), []))
            for name in pending.signed}


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RekognitionApp:
    """ASGI app: SigV4-authenticated Rekognition JSON 1.1 in front of ``service.call``.

    ``service``: a faceaudit.accountability.guard.GuardedService (what ``faceaudit serve``
    runs: every request passes the use policies, the moratorium and the budgets, and
    its facts are kept on the Outcome), or a bare service called as ``service.call(operation,
    request)`` (tests of the wire layer).

    ``credentials`` is where access keys are looked up: a
    faceaudit.server.access.StoreKeys over the key store (what ``faceaudit serve``
    uses), or one key pair or a mapping from access key id to key pair, each then
    an admin key; ``region`` restricts the credential scope's
    region (``None``: any).  ``on_shutdown`` callables run at lifespan shutdown
    after in-flight calls finished (e.g. ``store.close``).
    """

    # The web console's ASGI app, served under CONSOLE_PATH when set (attach_console).
    console: Callable[[dict, Callable, Callable], Awaitable[None]] | None = None

    def __init__(self, service: Service | GuardedService,
                 credentials: sigv4.Credentials | Mapping[str, sigv4.Credentials] | StoreKeys | StaticKeys,
                 *, protocol: JsonProtocol | None = None, region: str | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, threads: int = DEFAULT_THREADS,
                 on_shutdown: Iterable[Callable[[], Any]] = (),
                 max_inflight_body_bytes: int = MAX_INFLIGHT_BODY_BYTES,
                 body_idle_timeout: float = BODY_IDLE_TIMEOUT,
                 body_total_timeout: float = BODY_TOTAL_TIMEOUT,
                 signing_policy: sigv4.SigningPolicy | None = SIGNING_POLICY,
                 data_dir: str | os.PathLike | None = None,
                 faceaudit: CallerService | None = None, search_log: SearchLog | None = None):
        self.service = service
        self.guard = service if isinstance(service, GuardedService) else None
        self.faceaudit = faceaudit  # FaceAuditService.* (blind review); None: those operations are refused
        self.credentials: StoreKeys | StaticKeys = (
            StaticKeys(credentials) if isinstance(credentials, sigv4.Credentials | Mapping) else credentials)
        self.protocol = protocol or JsonProtocol.default()
        self.region = region
        self.max_body_bytes = max_body_bytes
        self.max_inflight_body_bytes = max(max_inflight_body_bytes, max_body_bytes)
        self.inflight_body_bytes = 0  # only touched on the event loop thread
        self.body_idle_timeout = body_idle_timeout
        self.body_total_timeout = body_total_timeout
        self.signing_policy = signing_policy
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.search_log = search_log
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads),
                                           thread_name_prefix="faceaudit-call")
        self.on_shutdown = list(on_shutdown)
        self._closed = False

    # -- the request pipeline ------------------------------------------------------
    def preauthenticate(self, method: str, raw_path: str, query_string: str,
                        headers: list[tuple[bytes, bytes]]) -> sigv4.PendingRequest:
        """Every check possible before the body is read (cheap: no HMAC); raises RekognitionError."""
        pending = sigv4.preverify(method, raw_path, query_string, headers, self.credentials,
                                  region=self.region, policy=self.signing_policy)
        if pending.presigned and self.signing_policy is not None:
            target = _header(headers, b"x-amz-target") or ""
            name = target.partition(".")[2]
            if not name.startswith(READ_ONLY_PREFIXES):
                raise KeyDenied(
                    f"Presigned requests are limited to read-only operations "
                    f"({', '.join(p + '*' for p in READ_ONLY_PREFIXES)}); "
                    f"sign '{name[:100] or 'this operation'}' with an Authorization header",
                    key_of(pending), "presigned request for an operation that changes data")
        return pending

    def handle(self, method: str, raw_path: str, query_string: str,
               headers: list[tuple[bytes, bytes]], body: bytes, request_id: str,
               pending: sigv4.PendingRequest | None = None, arrived: datetime | None = None) -> Outcome:
        """Authenticate, decode, call and encode one request; never raises.

        ``pending`` is what :meth:`preauthenticate` returned (checked again when absent);
        ``arrived``: when the request arrived (default now).
        """
        outcome = Outcome(200, b"", request_id)
        arrived = arrived or datetime.now(UTC)
        try:
            if pending is None:
                pending = self.preauthenticate(method, raw_path, query_string, headers)
            sigv4.verify_signature(pending, method, raw_path, query_string, body)
            outcome.key = key = key_of(pending)
            caller = Caller(key, request_id, arrived, signed_headers=_signed_headers(pending))
            outcome.facts = facts = Facts(purpose=caller.purpose, case=caller.case)
            path = raw_path.split("?", 1)[0]
            if method != "POST" or path != "/":
                raise UnknownOperationException(
                    f"Rekognition operations are 'POST /' requests, not '{method} {path[:100]}'")
            operation = self.protocol.operation(_header(headers, b"x-amz-target"))
            outcome.operation = facts.operation = operation.name
            own = self._admit(operation)
            authorize(key, operation.name)
            request = self.protocol.decode_request(operation, body)
            outcome.dispatched = True
            response = self._dispatch(own, caller, operation.name, request, facts)
            outcome.headers.extend(facts.extra_headers)
            outcome.body = self.protocol.encode_response(operation, response)
        except RekognitionError as error:
            if isinstance(error, InternalServerError) and is_storage_full(error):
                self._out_of_storage(outcome, error)  # a store that wrapped the disk error
            else:
                self._fail(outcome, error)
        except Exception as error:
            if is_storage_full(error):
                self._out_of_storage(outcome, error)
            else:  # a bug: answer InternalServerError, keep the traceback in the log
                log.exception("request_id=%s op=%s failed", request_id, outcome.operation)
                self._fail(outcome, InternalServerError("Internal server error"))
        self._write_search_log(outcome, arrived, body)
        return outcome

    def _write_search_log(self, outcome: Outcome, arrived: datetime, body: bytes) -> None:
        """One durable record per request whose signature was verified, before it is answered;
        an unverified refusal is only counted (faceaudit.accountability.searchlog)."""
        if self.search_log is None:
            return
        if outcome.key is None:
            self._count_refused(outcome)
            return
        facts = outcome.facts
        if facts is not None and not outcome.dispatched and outcome.error is not None:
            _describe_refused(facts, body)
        try:
            self.search_log.append(request_record(
                key=outcome.key, request_id=outcome.request_id, at=arrived, facts=facts,
                operation=outcome.operation, status=outcome.status, error=outcome.error, reason=outcome.reason))
        except Exception as error:  # never an answer the log does not hold
            log.error("request_id=%s op=%s: the search log could not be written (%s: %s); answer withheld",
                      outcome.request_id, outcome.operation, type(error).__name__, error)
            outcome.headers, outcome.body = [], b""
            if is_storage_full(error):
                self._out_of_storage(outcome, error)
            else:
                self._fail(outcome, InternalServerError(
                    "The request could not be recorded in the search log, so its result is withheld. "
                    "Retry later; the server's operator must check its data directory."))
            return

    def _flush_refused(self) -> None:
        try:
            if self.search_log is not None:
                self.search_log.flush_refused()
        except Exception as error:
            log.error("the search log's refusal counts could not be written: %s", error)

    def _count_refused(self, outcome: Outcome) -> None:
        """An unauthenticated refusal: counted in memory, written as one aggregate record now and then."""
        if self.search_log is None:
            return
        if self.search_log.note_refused(outcome.error):
            self._flush_refused()  # already on a worker thread

    def call(self, caller: Caller, operation: str, request: Mapping[str, Any], facts: Facts) -> dict[str, Any]:
        """One operation for a caller already authenticated some other way than SigV4 (the console).

        ``request`` is the JSON object an API client sends (blobs base64-encoded), so it is
        validated by the same model as a signed request. The steps after the signature are
        :meth:`handle`'s: the operation must exist and be supported, the key's role may call
        it, then the service. Raises RekognitionError; ``facts`` is filled for the search log.
        """
        body = json.dumps(request).encode("utf-8")
        outcome = Outcome(200, b"", caller.request_id, key=caller.key, facts=facts)
        facts.purpose = facts.purpose or caller.purpose
        facts.case = facts.case or caller.case
        try:
            target = operation if "." in operation else f"{self.protocol.target_prefix}.{operation}"
            model = self.protocol.operation(target)  # "FaceAuditService.X" names one of faceaudit's own
            outcome.operation = facts.operation = model.name
            own = self._admit(model)
            authorize(caller.key, model.name)
            decoded = self.protocol.decode_request(model, body)
            outcome.dispatched = True
            response = self._dispatch(own, caller, model.name, decoded, facts)
        except RekognitionError as error:  # refused: logged like a signed request's refusal, then raised
            self._fail(outcome, error)
            self._write_search_log(outcome, caller.at, body)
            raise
        self._write_search_log(outcome, caller.at, body)
        if outcome.error is not None:  # the log could not hold it: no answer
            raise InternalServerError("The request could not be recorded in the search log, so its result "
                                      "is withheld. Retry later.")
        return response

    def _admit(self, operation: OperationModel) -> bool:
        """True for faceaudit's own operations (its model), False for Rekognition's;
        InvalidParameterException for one no service here answers."""
        own = self.protocol.target_prefix_of(operation) == FACEAUDIT_TARGET_PREFIX
        supported = getattr(self.faceaudit if own else self.service, "operations", None)
        if (own and self.faceaudit is None) or (supported is not None and operation.name not in supported):
            raise InvalidParameterException(f"Operation {operation.name} is not supported by faceaudit")
        return own

    def _dispatch(self, own: bool, caller: Caller, operation: str, request: dict[str, Any],
                  facts: Facts) -> dict[str, Any]:
        """The operation through the accountability layer (the guard, or faceaudit's own service),
        for signed requests (:meth:`handle`) and the console (:meth:`call`) alike."""
        if own:
            assert self.faceaudit is not None
            return self.faceaudit.call(caller, operation, request, facts)
        if self.guard is not None:
            return self.guard.call(caller, operation, request, facts)
        # a bare service (in-process tests, benchmarks): the log describes the request itself
        assert not isinstance(self.service, GuardedService)
        describe_request(facts, request)
        response = self.service.call(operation, request)
        describe_response(facts, response)
        return response

    def _out_of_storage(self, outcome: Outcome, error: BaseException) -> None:
        """The operator's problem, said plainly to both sides."""
        where = self.data_dir or "the data directory"
        log.error("request_id=%s op=%s: out of storage in %s (%s: %s); free space there",
                  outcome.request_id, outcome.operation, where, type(error).__name__, error)
        self._fail(outcome, OutOfStorageError(
            "The faceaudit server is out of storage space; the request was not completed. "
            "Its operator must free space in the server's data directory. Retry later."))

    def _fail(self, outcome: Outcome, error: RekognitionError) -> None:
        outcome.reason = getattr(error, "reason", None) or outcome.reason
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
        arrived = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        method = scope["method"]
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        raw_path = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
        query_string = scope.get("query_string", b"").decode("latin-1")

        if self.console is not None and (scope["path"] == CONSOLE_PATH
                                         or scope["path"].startswith(CONSOLE_PATH + "/")):
            await self.console(scope, receive, send)  # the web console (faceaudit.console): its own rules
            return
        if method in ("GET", "HEAD") and raw_path == "/" and not query_string:
            body = json.dumps({"service": "faceaudit", "status": "ok"}).encode()
            await self._send(send, Outcome(200, body, request_id), content_type="application/json",
                             head=method == "HEAD")
            return

        outcome: Outcome | None = None
        close = False
        reservation = _Reservation(self)
        try:
            try:
                declared = self._declared_length(headers)  # ImageTooLargeException first
                pending = self.preauthenticate(method, raw_path, query_string, headers)
                if declared is not None:
                    reservation.grow(declared)
                body = await self._read_body(receive, reservation)
            except RekognitionError as error:  # answered without reading (the rest of) the body
                outcome = Outcome(0, b"", request_id)
                self._fail(outcome, error)
                if isinstance(error, ThrottlingException):
                    outcome.headers.append(("Retry-After", str(RETRY_AFTER_SECONDS)))
                close = _header(headers, b"content-length") not in ("0", None) or \
                    _header(headers, b"transfer-encoding") is not None
                if self.search_log is not None and self.search_log.note_refused(outcome.error):
                    try:
                        self.executor.submit(self._flush_refused)  # the write stays off the event loop
                    except RuntimeError:  # shutting down: close() writes the counts
                        pass
            except _Disconnected:
                return
            if outcome is None:
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(
                    self.executor, self.handle, method, raw_path, query_string, headers, body,
                    request_id, pending, arrived)
        finally:
            reservation.release()  # the body (and what was decoded from it) is gone now
        await self._send(send, outcome, close=close)
        client = scope.get("client") or ("-", 0)
        self.record_request(RequestRecord(
            request_id, arrived, str(client[0]), method, outcome.operation, outcome.status, outcome.error,
            outcome.reason, outcome.dispatched, outcome.key, (time.perf_counter() - started) * 1000))

    def record_request(self, record: RequestRecord) -> None:
        """Every answered request passes here exactly once, allowed or refused (health checks
        aside): today one log line; the search log of issue 10 appends its entry here."""
        key = record.key
        log.info("%s %s op=%s status=%d error=%s dispatched=%s ms=%.1f key=%s role=%s unit=%s "
                 "reason=%s request_id=%s",
                 record.client, record.method, record.operation or "-", record.status, record.error or "-",
                 "yes" if record.dispatched else "no", record.ms,
                 key.name if key else "-", key.role if key else "-", (key.unit or "-") if key else "-",
                 json.dumps(record.reason) if record.reason else "-", record.request_id)

    # -- the body: size limit, in-flight budget, timeouts -------------------------------
    def _declared_length(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        declared = _header(headers, b"content-length")
        if declared is None or not declared.strip().isdigit():
            return None  # chunked: admitted piece by piece in _read_body
        size = int(declared)
        if size > self.max_body_bytes:
            raise ImageTooLargeException(
                f"Request body of {size} bytes exceeds the {self.max_body_bytes}-byte limit")
        return size

    async def _read_body(self, receive: Callable, reservation: _Reservation) -> bytes:
        limit = self.max_body_bytes
        deadline = time.monotonic() + self.body_total_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            wait = min(self.body_idle_timeout, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except TimeoutError:
                raise RequestTimeoutException(
                    f"The request body was not received in time (idle limit "
                    f"{self.body_idle_timeout:g} s, total {self.body_total_timeout:g} s)") from None
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ImageTooLargeException(f"Request body exceeds the {limit}-byte limit")
            if size > reservation.size:  # no (or a short) Content-Length: admit as it arrives
                reservation.grow(size - reservation.size)
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
              keys: StoreKeys | None = None, engine: str | None = None,
              settings: Settings | None = None, database: str | None = None) -> RekognitionApp:
    """The real thing: the engine named ``engine`` (default: FACEAUDIT_ENGINE, else sface) +
    the store ``database`` names (faceaudit.storage.open_store: None is EmbeddedStore(data_dir),
    a postgresql:// URL PostgresStore with one connection per request thread) + RekognitionService,
    guarded by the use policies and moratoria of ``data_dir/accountability.db`` (GuardedService),
    behind the key store of ``data_dir``. When ``database`` is PostgreSQL, the keys, the
    accountability state, the review store and the search log are in it too (one chain, one
    queue, one set of moratoria and budgets for every server on it); the data directory keeps
    this host's signing and sealing keys (docs/accountability.md).

    ``keys``: the key store, already opened (default: opened here, taking in the
    single-key start's pair, faceaudit.server.credentials.open_keys); it is closed
    at shutdown. ``settings`` (default: the environment's) give that pair and the
    service's score normalization."""
    from faceaudit.accountability.faceaudit_service import FaceAuditService
    from faceaudit.accountability.retention import Retention, RetentionLedger, RetentionPurger
    from faceaudit.accountability.review import ReviewStore
    from faceaudit.accountability.state import AccountabilityState
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.runtime import default_engine
    from faceaudit.server.credentials import open_keys
    from faceaudit.storage import is_postgres_url, open_store

    if keys is None:
        keys = StoreKeys(open_keys(data_dir, settings=settings, database=database).store)
    store = open_store(database, data_dir, pool_size=threads,
                       approximate_above=(settings or Settings.from_env()).approximate_above)
    service = RekognitionService(default_engine(engine), store, bucket_dir=bucket_dir, settings=settings)
    accountability = database if is_postgres_url(database) else None  # else the data directory's SQLite files
    search_log = SearchLog(data_dir, database=accountability)
    # the guard's ReviewQueue and FaceAuditService.*
    review = ReviewStore(data_dir, recorder=search_log, database=accountability)
    state = AccountabilityState(data_dir, database=accountability, pool_size=threads)
    ledger = RetentionLedger(data_dir)
    # The guard writes its policy changes and moratoria to the same log (the Recorder of PLAN.md).
    guard = GuardedService(service, state, review_queue=review, recorder=search_log, ledger=ledger)
    purger = RetentionPurger(Retention(state, store, review, ledger, search_log))
    purger.start()  # expired faces, probes and review items: now, then hourly (one process at a time)
    hooks = [purger.close, store.close, keys.store.close, guard.close, review.close, ledger.close, search_log.close]
    return RekognitionApp(guard, keys, region=region, threads=threads, on_shutdown=hooks,
                          data_dir=os.path.abspath(data_dir), faceaudit=FaceAuditService(review, search_log),
                          search_log=search_log)


def attach_console(app: RekognitionApp, key_store: KeyStore, data_dir: str | os.PathLike,
                   reports_dir: str | os.PathLike | None = None) -> RekognitionApp:
    """Serve the web console at CONSOLE_PATH of ``app``: signed in with the key store's keys,
    calling operations through ``app.call`` (the API's own path), listing the audit reports
    under ``reports_dir``. Its sessions live in ``data_dir``; they are closed with the app."""
    from faceaudit.console import Console

    console = Console(app.call, key_store, data_dir, reports_dir=reports_dir, mount=CONSOLE_PATH)
    app.console = console
    app.on_shutdown.append(console.close)
    return app


def configure_logging() -> None:
    """One line per request (and server events) on stderr, for ``faceaudit serve`` and its workers."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def create_app_from_env() -> RekognitionApp:
    """App factory for uvicorn worker processes (an import string: it takes no arguments).

    ``faceaudit serve --workers`` hands each worker its options as the FACEAUDIT_SERVE_*
    variables (faceaudit.settings; faceaudit.server.runner sets them)."""
    configure_logging()
    settings = Settings.from_env()
    if settings.serve_data_dir is None:
        raise KeyError(f"{SERVE_DATA_DIR_ENV} (set by 'faceaudit serve --workers' for its workers)")
    app = build_app(settings.serve_data_dir, bucket_dir=settings.serve_bucket_dir,
                    threads=settings.serve_threads, region=settings.serve_region, settings=settings,
                    database=settings.database)
    if isinstance(app.credentials, StoreKeys):
        attach_console(app, app.credentials.store, settings.serve_data_dir, settings.serve_reports_dir)
    return app
