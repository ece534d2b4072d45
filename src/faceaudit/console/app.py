"""The web console: an ASGI app that ``faceaudit serve`` mounts at /console.

Who may do what is the API's: people sign in with an access key id and its secret (the key
store of faceaudit.access, looked up again on every request, so a revoked key is out at
once), and every operation a page runs goes through ``operations(caller, operation,
request, facts)`` -- the server's own path after the signature check (role, policies, the
search log: faceaudit.server.app.RekognitionApp.call). The console has no other way to
reach a collection.

Each page names the roles it is for (:data:`PAGE_ROLES`, derived from the operations it
runs); any other role gets 403. Sessions: faceaudit.console.sessions. Every POST carries
its session's CSRF token (the sign-in form: a token in a cookie of its own), and a POST
whose Origin is another site's is refused. docs/console.md says all of it.

Handlers are plain functions run on a small thread pool: the key store, the session file
and the operations all block.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlencode

from faceaudit.access import (
    ADMIN,
    AUDITOR,
    OPERATION_ROLES,
    OPERATOR,
    REVIEWER,
    AccessKey,
    KeyStore,
    KeyStoreUnavailable,
    allows,
    roles_for,
)
from faceaudit.accountability.context import CASE_HEADER, PURPOSE_HEADER, REVIEW_ITEM_HEADER, Caller, Facts
from faceaudit.accountability.policies import POLICIES, POLICY_TAG
from faceaudit.accountability.searchlog import KINDS
from faceaudit.audit.report import ReportError
from faceaudit.audit.report.compare import comparison_context
from faceaudit.audit.report.html import report_context
from faceaudit.audit.report.transparency import transparency_context
from faceaudit.console.figures import DEFAULT_THRESHOLD, collection_threshold, threshold_meaning
from faceaudit.console.reports import ReportFolder
from faceaudit.console.review import (
    DECISION_CHOICES,
    MAX_CANDIDATES_DECIDED,
    DecisionForm,
    blind_candidates,
    image_data_uri,
    read_decisions,
    revealed_rows,
)
from faceaudit.console.sessions import Session, SessionStore
from faceaudit.console.templating import render
from faceaudit.console.web import SESSION_COOKIE, SIGN_IN_COOKIE, Form, FormError, Request, Response, security_headers
from faceaudit.errors import RekognitionError

log = logging.getLogger("faceaudit.console")

LABEL = "investigative lead — not an identification"
SMALL_BODY = 64 * 1024  # forms without files
# Rekognition takes images of up to 5 MB as bytes; the multipart form around one adds little.
UPLOAD_BODY = 6 * 1024 * 1024
# A decision form: up to 100 candidates with a reason of 2,000 characters each, percent-encoded.
DECISION_BODY = 2 * 1024 * 1024
MAX_UPLOADS_IN_FLIGHT = 4
BODY_IDLE_TIMEOUT = 10.0
THREADS = 4
LIST_FACES_SHOWN = 100


class Operations(Protocol):
    """The one entry to the operations the server gives the console (RekognitionApp.call)."""

    def __call__(self, caller: Caller, operation: str, request: Mapping[str, Any], facts: Facts) -> dict[str, Any]: ...


# Page -> the roles it is for. Pages that run operations are for the roles that may run them
# (faceaudit.access.roles), so the console can never offer what the API would refuse.
PAGE_ROLES: dict[str, tuple[str, ...]] = {
    "home": (ADMIN, OPERATOR, REVIEWER, AUDITOR),
    "collections": roles_for("ListCollections"),
    "create-collection": roles_for("CreateCollection"),
    "collection": roles_for("DescribeCollection"),
    "index": roles_for("IndexFaces"),
    "search": roles_for("SearchFacesByImage"),
    # Audit reports: auditors read them; admins and operators, who choose thresholds, too.
    "reports": (ADMIN, OPERATOR, AUDITOR),
    # Blind review: the queue, one item (blind) and its decision are the reviewers'; the
    # released result of a search is for the keys that search (the store: only the searching key).
    "review": roles_for("ListReviewItems"),
    "review-item": roles_for("GetReviewItem"),
    "decide": roles_for("DecideReviewItem"),
    "review-result": roles_for("GetReviewResult"),
    # The search log and the transparency report: the auditors' (and the admin's) reading operations.
    "log": roles_for("ListSearchLogRecords"),
    "verify": roles_for("VerifySearchLog"),
    "transparency": roles_for("GetTransparencyReport"),
}
NAV = [("collections", "Collections", "/collections"), ("search", "Search", "/search"),
       ("review-result", "Review results", "/results"), ("review", "Review queue", "/review"),
       ("reports", "Audit reports", "/reports"), ("log", "Search log", "/log"),
       ("transparency", "Transparency", "/transparency")]
# Messages a redirect may ask the sign-in page to show (never text taken from the URL).
NOTICES = {
    "expired": "Your session ended (30 minutes without use, or 8 hours after signing in). Sign in again.",
    "signed-out": "You are signed out.",
    "revoked": "The key you signed in with is no longer active. Sign in with an active key.",
}


class _Refused(Exception):
    def __init__(self, response: Response):
        self.response = response


@dataclass
class Context:
    request: Request
    session: Session | None = None
    session_id: str | None = None
    key: AccessKey | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: tuple[str, ...]  # path segments; "{name}" captures one
    handler: Callable[[Console, Context], Response]
    page: str | None  # PAGE_ROLES key; None: no session needed (sign-in)
    body_limit: int = SMALL_BODY
    form_fields: int = 20

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.pattern):
            return None
        params = {}
        for want, got in zip(self.pattern, segments):
            if want.startswith("{"):
                params[want[1:-1]] = unquote(got)
            elif want != got:
                return None
        return params


class Console:
    """ASGI app for the paths under ``mount`` (the server hands them over unchanged)."""

    def __init__(self, operations: Operations, keys: KeyStore, data_dir: str | os.PathLike, *,
                 reports_dir: str | os.PathLike | None = None, mount: str = "/console",
                 sessions: SessionStore | None = None):
        self.operations = operations
        self.keys = keys
        self.sessions = sessions or SessionStore(data_dir)
        self.reports = ReportFolder(reports_dir)
        self.mount = mount.rstrip("/")
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="faceaudit-console")
        self.uploads_in_flight = 0  # event loop thread only
        static = resources.files("faceaudit.console") / "static"
        self.static = {"console.css": ((static / "console.css").read_bytes(), "text/css; charset=utf-8"),
                       "report.css": ((resources.files("faceaudit.audit.report") / "templates" / "report.css")
                                      .read_bytes(), "text/css; charset=utf-8")}
        self.routes = _ROUTES

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.sessions.close()

    def url(self, path: str) -> str:
        return self.mount + path

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope.get("type") != "http":
            return
        started = time.perf_counter()
        path = scope["path"][len(self.mount):] or "/"
        request = Request.from_scope(scope, path)
        ctx = Context(request)
        try:
            response = await self._respond(ctx, receive)
        except _Refused as refused:
            response = refused.response
        except Exception:
            log.exception("console %s %s failed", request.method, path)
            response = Response.text(500, "Internal error; the server's log has the details.")
        if request.method == "POST" and not request.body_read:
            response.headers.append(("connection", "close"))  # its unread body must not become the next request
        await self._send(send, request, response)
        key = ctx.key
        log.info("console %s %s %s status=%d key=%s role=%s ms=%.1f", request.client, request.method, path,
                 response.status, key.name if key else "-", key.role if key else "-",
                 (time.perf_counter() - started) * 1000)

    async def _respond(self, ctx: Context, receive: Callable[[], Awaitable[dict]]) -> Response:
        request = ctx.request
        if request.method in ("GET", "HEAD") and request.path.startswith("/static/"):
            found = self.static.get(request.path.removeprefix("/static/"))
            if found is None:
                return Response.text(404, "Not found")
            return Response(200, found[0], found[1], cache="max-age=3600")
        segments = [s for s in request.path.split("/") if s] or [""]
        matched = [(route, params) for route in self.routes
                   if (params := route.match(segments)) is not None]
        if not matched:
            return Response.text(404, "Not found")
        method = "GET" if request.method == "HEAD" else request.method
        chosen = next(((r, p) for r, p in matched if r.method == method), None)
        if chosen is None:
            return Response(405, b"Method not allowed", "text/plain; charset=utf-8",
                            headers=[("allow", ", ".join(sorted({r.method for r, _ in matched})))])
        route, ctx.params = chosen
        request.max_fields = route.form_fields
        loop = asyncio.get_running_loop()
        if route.page is not None:  # before the body is read: who is asking, and may they?
            await loop.run_in_executor(self.executor, self._authenticate, ctx, route.page)
        if method == "POST":
            self._check_origin(request)
            upload = route.body_limit > SMALL_BODY
            if upload and self.uploads_in_flight >= MAX_UPLOADS_IN_FLIGHT:
                return Response(503, b"Too many uploads at once; retry shortly", "text/plain; charset=utf-8",
                                headers=[("retry-after", "1")])
            self.uploads_in_flight += upload
            try:
                request.body = await self._read_body(request, receive, route.body_limit)
            finally:
                self.uploads_in_flight -= upload
        return await loop.run_in_executor(self.executor, self._handle, route, ctx)

    def _handle(self, route: Route, ctx: Context) -> Response:
        if ctx.request.method == "POST" and route.page is not None:
            self._check_csrf(ctx)
        try:
            return route.handler(self, ctx)
        except _Refused as refused:
            return refused.response

    async def _read_body(self, request: Request, receive: Callable[[], Awaitable[dict]], limit: int) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Refused(Response.text(413, f"The form is larger than {limit // 1024} KiB."))
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_TIMEOUT)
            except TimeoutError:
                raise _Refused(Response.text(408, "The form did not arrive in time.")) from None
            if message["type"] == "http.disconnect":
                raise _Refused(Response.text(400, "The connection closed."))
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(Response.text(413, f"The form is larger than {limit // 1024} KiB."))
            chunks.append(chunk)
            if not message.get("more_body", False):
                request.body_read = True
                return b"".join(chunks)

    async def _send(self, send: Callable[[dict], Awaitable[None]], request: Request, response: Response) -> None:
        headers = [(b"content-type", response.content_type.encode()),
                   (b"content-length", str(len(response.body)).encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in [*security_headers(response, request.https), *response.headers]]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else response.body})

    # -- who is asking ----------------------------------------------------------------------
    def _authenticate(self, ctx: Context, page: str) -> None:
        """The live session and its active key, and the key's role is one the page is for;
        else the response that says otherwise (raised as _Refused)."""
        session_id = ctx.request.cookies.get(SESSION_COOKIE)
        session = self.sessions.touch(session_id) if session_id else None
        if session is None:
            raise _Refused(self._to_sign_in(ctx.request, "expired" if session_id else None))
        try:
            issued = self.keys.lookup(session.access_key_id)
        except KeyStoreUnavailable as error:  # fail closed
            log.error("console: the key store could not be read: %s", error)
            raise _Refused(Response.text(503, "The key store cannot be read; try again shortly.")) from error
        if issued is None or not issued.key.active:
            self.sessions.end_all_for(session.access_key_id)
            raise _Refused(self._to_sign_in(ctx.request, "revoked"))
        ctx.session, ctx.session_id, ctx.key = session, session_id, issued.key
        if issued.key.role not in PAGE_ROLES[page]:
            raise _Refused(self.page(ctx, "error.html.j2", 403, page_title="Not for your role",
                                     message=f"This page is for the {', '.join(PAGE_ROLES[page])} roles; "
                                             f"your key '{issued.key.name}' has the role {issued.key.role}."))

    def _to_sign_in(self, request: Request, notice: str | None) -> Response:
        response = Response.redirect(self.url("/sign-in") + (f"?notice={notice}" if notice else ""))
        if request.cookies.get(SESSION_COOKIE):
            response.clear_cookie(SESSION_COOKIE, path=self.mount, secure=request.https)
        return response

    def _check_origin(self, request: Request) -> None:
        """Browsers send Origin on every POST; one from another site is a forged form."""
        origin = request.headers.get("origin")
        if origin is None:
            return
        host = request.headers.get("host", "")
        if origin not in (f"{'https' if request.https else 'http'}://{host}",):
            raise _Refused(Response.text(403, "This form was sent from another site; refused."))

    def _check_csrf(self, ctx: Context) -> None:
        assert ctx.session is not None
        try:
            token = ctx.request.form().fields.get("csrf")
        except FormError as error:
            raise _Refused(Response.text(400, str(error))) from None
        if not ctx.session.csrf_matches(token):
            raise _Refused(Response.text(403, "The form's CSRF token is missing or wrong; reload the page "
                                              "and send it again."))

    # -- rendering ----------------------------------------------------------------------------
    def page(self, ctx: Context, template: str, status: int = 200, *, report_styles: bool = False,
             current: str | None = None, **context: Any) -> Response:
        key = ctx.key
        nav = [{"label": label, "href": self.url(href), "current": name == current}
               for name, label, href in NAV if key is not None and key.role in PAGE_ROLES[name]]
        frame = {"mount": self.mount, "static": self.url("/static"), "nav": nav, "key": key,
                 "csrf": ctx.session.csrf if ctx.session else "", "report_styles": report_styles}
        html = render(template, frame=frame, **context)
        return Response(status, html.encode("utf-8"), inline_styles=report_styles)

    def run(self, ctx: Context, operation: str, request: dict[str, Any], *,
            purpose: str | None = None, case: str | None = None) -> tuple[dict[str, Any], Facts]:
        """One operation as the signed-in key, through the server's path (RekognitionError on refusal).

        A purpose and case typed into a console form count as stated by the key holder: the
        session proves who typed them as a signature proves who sent a header."""
        assert ctx.key is not None
        stated = {name: value.strip() for name, value in ((PURPOSE_HEADER, purpose), (CASE_HEADER, case))
                  if value and value.strip()}
        caller = Caller(ctx.key, str(uuid.uuid4()), datetime.now(UTC), stated)
        facts = Facts(operation=operation)
        return self.operations(caller, operation, request, facts), facts


# ---------------------------------------------------------------- the pages


def sign_in_form(console: Console, ctx: Context, status: int = 200, error: str | None = None,
                 access_key_id: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    notice = NOTICES.get(ctx.request.query.get("notice", ""))
    response = console.page(ctx, "sign_in.html.j2", status, page_title="Sign in", token=token, error=error,
                            notice=notice, access_key_id=access_key_id)
    response.set_cookie(SIGN_IN_COOKIE, token, path=console.mount, secure=ctx.request.https, max_age=3600)
    return response


def sign_in(console: Console, ctx: Context) -> Response:
    request = ctx.request
    if not console.sessions.sign_in_allowed(request.client):
        wait = console.sessions.retry_after_seconds(request.client)
        response = sign_in_form(console, ctx, 429, error=f"Too many failed sign-ins from your address; "
                                                         f"try again in {wait} seconds.")
        response.headers.append(("retry-after", str(wait)))
        return response
    try:
        form = request.form()
    except FormError as error:
        return sign_in_form(console, ctx, 400, error=str(error))
    cookie_token, form_token = request.cookies.get(SIGN_IN_COOKIE), form.get("token")
    if not cookie_token or not hmac.compare_digest(cookie_token.encode(), form_token.encode()):
        return sign_in_form(console, ctx, 403, error="The sign-in form expired or came from elsewhere; "
                                                     "it has been reloaded: sign in again.")
    access_key_id, secret = form.get("access_key_id").strip(), form.get("secret")
    try:
        issued = console.keys.lookup(access_key_id) if 0 < len(access_key_id) <= 128 else None
    except KeyStoreUnavailable as error:  # fail closed, and say it is not the person's fault
        log.error("console: the key store could not be read: %s", error)
        return sign_in_form(console, ctx, 503, error="The key store cannot be read; try again shortly.")
    # Compared in constant time, and against a dummy when the id is unknown, so the answer's
    # timing says nothing about which ids exist.
    expected = issued.secret_access_key if issued is not None else "x" * 40
    good = hmac.compare_digest(expected.encode(), secret.encode()) and issued is not None
    if not good or issued is None or not issued.key.active:
        console.sessions.record_failure(request.client)
        log.warning("console: failed sign-in from %s (access key id %r)", request.client, access_key_id[:32])
        return sign_in_form(console, ctx, 401, error="The access key id or secret is wrong, or the key is "
                                                     "not active.", access_key_id=access_key_id[:128])
    old = request.cookies.get(SESSION_COOKIE)
    if old:  # never reuse a session id from before sign-in
        console.sessions.end(old)
    session_id, _ = console.sessions.create(issued.key.access_key_id)
    log.info("console: %s signed in as %r (role %s)", request.client, issued.key.name, issued.key.role)
    response = Response.redirect(console.url("/"))
    response.set_cookie(SESSION_COOKIE, session_id, path=console.mount, secure=request.https)
    response.clear_cookie(SIGN_IN_COOKIE, path=console.mount, secure=request.https)
    return response


def sign_out(console: Console, ctx: Context) -> Response:
    if ctx.session_id:
        console.sessions.end(ctx.session_id)
    response = Response.redirect(console.url("/sign-in?notice=signed-out"))
    response.clear_cookie(SESSION_COOKIE, path=console.mount, secure=ctx.request.https)
    return response


def home(console: Console, ctx: Context) -> Response:
    assert ctx.key is not None
    pages = [{"label": label, "href": console.url(href)} for name, label, href in NAV
             if ctx.key.role in PAGE_ROLES[name]]
    return console.page(ctx, "home.html.j2", page_title="faceaudit console", pages=pages)


def _error_text(error: RekognitionError) -> str:
    return f"{error.code}: {error}"


def _status(error: RekognitionError) -> int:
    """The page's status for a refused operation: 403 for a denial (Rekognition says 400)."""
    return 403 if error.code == "AccessDeniedException" else error.http_status


def _collections(console: Console, ctx: Context) -> list[dict[str, Any]]:
    listed, _ = console.run(ctx, "ListCollections", {"MaxResults": 1000})
    rows = []
    for collection_id in listed.get("CollectionIds", []):
        try:
            described, _ = console.run(ctx, "DescribeCollection", {"CollectionId": collection_id})
        except RekognitionError as error:
            rows.append({"id": collection_id, "error": _error_text(error)})
            continue
        rows.append(_collection_row(collection_id, described, _policy_of(console, ctx, described)))
    return rows


def _policy_of(console: Console, ctx: Context, described: dict[str, Any]) -> str | None:
    """The collection's use policy, from its ``faceaudit:policy`` tag (ListTagsForResource), when this
    server answers tags and the key's role may read them; otherwise None (no policy known)."""
    assert ctx.key is not None
    arn = described.get("CollectionARN")
    if not arn or not allows(ctx.key.role, "ListTagsForResource"):
        return None  # asked only when allowed: the console adds no denials to the search log
    try:
        tags, _ = console.run(ctx, "ListTagsForResource", {"ResourceArn": arn})
    except RekognitionError:  # a server without tag support
        return None
    policy = (tags.get("Tags") or {}).get(POLICY_TAG)
    return str(policy) if policy else None


def _collection_row(collection_id: str, described: dict[str, Any], policy: str | None) -> dict[str, Any]:
    threshold = collection_threshold(policy)
    return {"id": collection_id, "error": None, "faces": described.get("FaceCount", 0),
            "users": described.get("UserCount", 0), "model_version": described.get("FaceModelVersion"),
            "policy": policy, "threshold": threshold,
            "meaning": threshold_meaning(described.get("FaceModelVersion"), threshold)}


def collections_page(console: Console, ctx: Context, *, status: int = 200, notice: str | None = None,
                     error: str | None = None) -> Response:
    try:
        rows = _collections(console, ctx)
    except RekognitionError as failure:
        rows, error = [], _error_text(failure)
    assert ctx.key is not None
    return console.page(ctx, "collections.html.j2", status, page_title="Collections", current="collections",
                        collections=rows, notice=notice, error=error, collection_url=_collection_url(console),
                        can_create=ctx.key.role in PAGE_ROLES["create-collection"], policies=list(POLICIES))


def create_collection(console: Console, ctx: Context) -> Response:
    form = ctx.request.form()
    collection_id = form.get("collection_id").strip()
    request: dict[str, Any] = {"CollectionId": collection_id}
    policy = form.get("policy").strip()
    if policy:  # Rekognition's own Tags parameter carries the use policy (docs/accountability.md)
        request["Tags"] = {POLICY_TAG: policy}
    try:
        console.run(ctx, "CreateCollection", request)
    except RekognitionError as error:
        return collections_page(console, ctx, status=_status(error), error=_error_text(error))
    return Response.redirect(_collection_url(console)(collection_id))


def _collection_url(console: Console) -> Callable[[str], str]:
    return lambda collection_id: console.url("/collections/" + quote(collection_id, safe=""))


def collection_page(console: Console, ctx: Context, *, status: int = 200, notice: str | None = None,
                    error: str | None = None, indexed: list[dict[str, Any]] | None = None) -> Response:
    collection_id = ctx.params["collection"]
    try:
        described, _ = console.run(ctx, "DescribeCollection", {"CollectionId": collection_id})
    except RekognitionError as failure:
        return console.page(ctx, "error.html.j2", _status(failure), page_title="Collection",
                            current="collections", message=_error_text(failure))
    row = _collection_row(collection_id, described, _policy_of(console, ctx, described))
    faces: list[dict[str, Any]] = []
    try:
        listed, _ = console.run(ctx, "ListFaces", {"CollectionId": collection_id, "MaxResults": LIST_FACES_SHOWN})
        faces = listed.get("Faces", [])
    except RekognitionError as failure:
        error = error or _error_text(failure)
    assert ctx.key is not None
    return console.page(ctx, "collection.html.j2", status, page_title=f"Collection {collection_id}",
                        current="collections", c=row, faces=faces, shown=LIST_FACES_SHOWN, notice=notice,
                        error=error, indexed=indexed, can_index=ctx.key.role in PAGE_ROLES["index"],
                        can_search=ctx.key.role in PAGE_ROLES["search"],
                        index_url=_collection_url(console)(collection_id) + "/faces",
                        search_url=console.url("/search?collection=" + quote(collection_id, safe="")))


def _image(form: Form) -> bytes | None:
    upload = form.files.get("image")
    return upload.data if upload is not None and upload.data else None


def index_faces(console: Console, ctx: Context) -> Response:
    form = ctx.request.form()
    image = _image(form)
    if image is None:
        return collection_page(console, ctx, status=400, error="Choose an image file to index.")
    request: dict[str, Any] = {"CollectionId": ctx.params["collection"],
                               "Image": {"Bytes": base64.b64encode(image).decode("ascii")}, "MaxFaces": 1}
    external = form.get("external_image_id").strip()
    if external:
        request["ExternalImageId"] = external
    try:
        answer, _ = console.run(ctx, "IndexFaces", request)
    except RekognitionError as error:
        return collection_page(console, ctx, status=_status(error), error=_error_text(error))
    records = answer.get("FaceRecords", [])
    unindexed = answer.get("UnindexedFaces", [])
    reasons = sorted({reason for face in unindexed for reason in face.get("Reasons", [])})
    notice = (f"Indexed {len(records)} face{'s' if len(records) != 1 else ''}"
              + (f"; {len(unindexed)} not indexed ({', '.join(reasons)})" if unindexed else "") + ".")
    return collection_page(console, ctx, notice=notice, indexed=[r["Face"] for r in records])


def _float_field(form: Form, name: str, default: float, low: float, high: float) -> float:
    return _float_field_text(form.get(name), default, low, high, name)


def _float_field_text(text: str, default: float, low: float, high: float, name: str = "value") -> float:
    text = text.strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: a number from {low:g} to {high:g}, got {text[:20]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: a number from {low:g} to {high:g}, got {value:g}")
    return value


def search_page(console: Console, ctx: Context, *, status: int = 200, error: str | None = None,
                values: dict[str, str] | None = None, results: dict[str, Any] | None = None) -> Response:
    try:
        collections = _collections(console, ctx)
    except RekognitionError as failure:
        collections, error = [], error or _error_text(failure)
    chosen = (values or {}).get("collection") or ctx.request.query.get("collection", "")
    values = {"collection": chosen, "threshold": "", "max_faces": "10", "purpose": "", "case": "", **(values or {})}
    return console.page(ctx, "search.html.j2", status, page_title="Search by image", current="search",
                        collections=[c for c in collections if not c["error"]], values=values, error=error,
                        results=results, label=LABEL, default_threshold=DEFAULT_THRESHOLD)


def search(console: Console, ctx: Context) -> Response:
    form = ctx.request.form()
    values = {name: form.get(name) for name in ("collection", "threshold", "max_faces", "purpose", "case")}
    image = _image(form)
    collection_id = values["collection"]
    if not collection_id:
        return search_page(console, ctx, status=400, error="Choose a collection.", values=values)
    if image is None:
        return search_page(console, ctx, status=400, error="Choose an image to search with.", values=values)
    try:
        described, _ = console.run(ctx, "DescribeCollection", {"CollectionId": collection_id})
    except RekognitionError as error:
        return search_page(console, ctx, status=_status(error), error=_error_text(error), values=values)
    try:  # empty: where the collection's searches start (its policy's floor, else 80)
        threshold = _float_field(form, "threshold", collection_threshold(_policy_of(console, ctx, described)), 0, 100)
        max_faces = int(_float_field(form, "max_faces", 10, 1, 4096))
    except ValueError as error:
        return search_page(console, ctx, status=400, error=str(error), values=values)
    request = {"CollectionId": collection_id, "Image": {"Bytes": base64.b64encode(image).decode("ascii")},
               "FaceMatchThreshold": threshold, "MaxFaces": max_faces}
    try:
        answer, facts = console.run(ctx, "SearchFacesByImage", request,
                                    purpose=values["purpose"], case=values["case"])
    except RekognitionError as error:
        return search_page(console, ctx, status=_status(error), error=_error_text(error), values=values)
    review_item = facts.review_item or next(
        (v for k, v in facts.extra_headers if k.lower() == REVIEW_ITEM_HEADER), None)
    meaning = threshold_meaning(described.get("FaceModelVersion"), threshold)
    results = {"collection": collection_id, "threshold": threshold, "matches": answer.get("FaceMatches", []),
               "box": answer.get("SearchedFaceBoundingBox"), "confidence": answer.get("SearchedFaceConfidence"),
               "meaning": meaning, "review_item": review_item, "probe": image_data_uri(image),
               "model_version": described.get("FaceModelVersion"),
               "result_url": _result_url(console, review_item, threshold) if review_item else None}
    return search_page(console, ctx, values=values, results=results)


def reports_page(console: Console, ctx: Context) -> Response:
    listed = console.reports.list()
    return console.page(ctx, "reports.html.j2", page_title="Audit reports", current="reports", reports=listed,
                        configured=console.reports.root is not None, report_url=_report_url(console),
                        compare_url=console.url("/report-comparison"))


def _report_url(console: Console) -> Callable[[str], str]:
    return lambda name: console.url("/reports/" + quote(name, safe="") + "/")


def report_page(console: Console, ctx: Context) -> Response:
    name = ctx.params["report"]
    try:
        report = console.reports.open(name)
    except KeyError:
        return console.page(ctx, "error.html.j2", 404, page_title="No such report", current="reports",
                            message=f"There is no report called {name!r} in the reports folder.")
    except ReportError as error:
        return console.page(ctx, "error.html.j2", 422, page_title="Report cannot be shown", current="reports",
                            message=str(error))
    return console.page(ctx, "report.html.j2", report_styles=True, current="reports",
                        **report_context(report, markdown_name="report.md"))


def report_markdown(console: Console, ctx: Context) -> Response:
    listed = console.reports.find(ctx.params["report"])
    markdown = listed.path.parent / "report.md" if listed else None
    if markdown is None or not markdown.is_file():
        return Response.text(404, "This report has no report.md.")
    return Response(200, markdown.read_bytes(), "text/markdown; charset=utf-8")


def compare_page(console: Console, ctx: Context) -> Response:
    first, second = ctx.request.query.get("a", ""), ctx.request.query.get("b", "")
    if not first or not second or first == second:
        return console.page(ctx, "error.html.j2", 400, page_title="Compare reports", current="reports",
                            message="Choose two different reports to compare.")
    try:
        comparison = console.reports.compare(first, second)
    except KeyError as missing:
        return console.page(ctx, "error.html.j2", 404, page_title="No such report", current="reports",
                            message=f"There is no report called {missing.args[0]!r} in the reports folder.")
    except ReportError as error:
        return console.page(ctx, "error.html.j2", 422, page_title="These reports cannot be compared",
                            current="reports", message=str(error))
    return console.page(ctx, "comparison.html.j2", report_styles=True, current="reports",
                        **comparison_context(comparison))


# ---------------------------------------------------------------- blind review

OWN = "FaceAuditService."  # faceaudit's own operations, by their full name

REVIEW_PAGE = 50


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else str(value or "")


def _item_url(console: Console, item_id: str) -> str:
    return console.url("/review/" + quote(item_id, safe=""))


def _result_url(console: Console, item_id: str, threshold: float | None = None) -> str:
    return console.url("/results/" + quote(item_id, safe="")) + (f"?threshold={threshold:g}" if threshold else "")


def review_queue(console: Console, ctx: Context) -> Response:
    """The open items this reviewer may decide (ListReviewItems: never its own searches, never twice)."""
    request: dict[str, Any] = {"MaxResults": REVIEW_PAGE}
    token = ctx.request.query.get("next", "")
    if token:
        request["NextToken"] = token[:255]
    try:
        listed, _ = console.run(ctx, OWN + "ListReviewItems", request)
    except RekognitionError as error:
        return console.page(ctx, "error.html.j2", _status(error), page_title="Review queue", current="review",
                            message=_error_text(error))
    items = [{"id": i["ItemId"], "url": _item_url(console, i["ItemId"]), "created": _when(i.get("CreatedAt")),
              "collection": i.get("CollectionId", ""), "policy": i.get("Policy") or "",
              "purpose": i.get("Purpose") or "", "case": i.get("Case") or "", "candidates": i.get("CandidateCount", 0),
              "decided": i.get("DecisionCount", 0), "required": i.get("RequiredReviewers", 0)}
             for i in listed.get("ReviewItems", [])]
    more = listed.get("NextToken")
    return console.page(ctx, "review_queue.html.j2", page_title="Review queue", current="review", items=items,
                        next_url=console.url("/review?next=" + quote(more, safe="")) if more else None,
                        first_page=not token)


def review_item_page(console: Console, ctx: Context, *, status: int = 200, error: str | None = None,
                     values: DecisionForm | None = None) -> Response:
    """One item, blind: the probe beside each candidate's crop, in this reviewer's order, no score, no rank."""
    item_id = ctx.params["item"]
    try:
        item, _ = console.run(ctx, OWN + "GetReviewItem", {"ItemId": item_id})
    except RekognitionError as failure:
        return console.page(ctx, "error.html.j2", _status(failure), page_title="Review item", current="review",
                            message=_error_text(failure))
    candidates = blind_candidates(item)
    typed = values or DecisionForm([c["id"] for c in candidates])
    return console.page(ctx, "review_item.html.j2", status, page_title="Review item", current="review",
                        item={"id": item_id, "collection": item.get("CollectionId", ""),
                              "policy": item.get("Policy") or "", "purpose": item.get("Purpose") or "",
                              "case": item.get("Case") or "", "created": _when(item.get("CreatedAt")),
                              "required": item.get("RequiredReviewers", 0),
                              "instructions": item.get("Instructions", "")},
                        probe=image_data_uri(item.get("Probe")), candidates=candidates,
                        too_many=len(candidates) > MAX_CANDIDATES_DECIDED, choices=DECISION_CHOICES,
                        order=" ".join(c["id"] for c in candidates), typed=typed, error=error,
                        action=_item_url(console, item_id))


def decide_review_item(console: Console, ctx: Context) -> Response:
    """Record this reviewer's decision on every candidate (DecideReviewItem); only its answer shows the scores."""
    item_id = ctx.params["item"]
    read = read_decisions(ctx.request.form())
    if read.problems:  # said before anything is sent; the review store checks all of it again
        return review_item_page(console, ctx, status=400, error=" ".join(read.problems), values=read)
    try:
        answer, _ = console.run(ctx, OWN + "DecideReviewItem", read.request(item_id))
    except RekognitionError as error:
        return review_item_page(console, ctx, status=_status(error), error=_error_text(error), values=read)
    return console.page(ctx, "review_decided.html.j2", page_title="Decision recorded", current="review",
                        item_id=item_id, collection=answer.get("CollectionId", ""),
                        state=str(answer.get("State", "")), decided=answer.get("DecisionCount", 0),
                        required=answer.get("RequiredReviewers", 0),
                        revealed=revealed_rows(answer.get("Revealed") or [], read.order),
                        queue_url=console.url("/review"))


def review_results(console: Console, ctx: Context) -> Response:
    """The signed-in key's own searches held for review, newest first (ListReviewResults: where each
    stands, no candidate), each linking to its result; or one opened by its item id."""
    item_id = ctx.request.query.get("item", "").strip()
    if item_id:
        return Response.redirect(_result_url(console, item_id))
    request: dict[str, Any] = {"MaxResults": REVIEW_PAGE}
    token = ctx.request.query.get("next", "")
    if token:
        request["NextToken"] = token[:255]
    try:
        listed, _ = console.run(ctx, OWN + "ListReviewResults", request)
    except RekognitionError as error:
        return console.page(ctx, "error.html.j2", _status(error), page_title="Review results",
                            current="review-result", message=_error_text(error))
    items = [{"id": i["ItemId"], "url": _result_url(console, i["ItemId"]), "created": _when(i.get("CreatedAt")),
              "collection": i.get("CollectionId", ""), "purpose": i.get("Purpose") or "",
              "case": i.get("Case") or "", "state": str(i.get("State", "")),
              "decided": i.get("DecisionCount", 0), "required": i.get("RequiredReviewers", 0)}
             for i in listed.get("ReviewResults", [])]
    more = listed.get("NextToken")
    return console.page(ctx, "review_results.html.j2", page_title="Review results", current="review-result",
                        items=items, first_page=not token,
                        next_url=console.url("/results?next=" + quote(more, safe="")) if more else None)


def review_result_page(console: Console, ctx: Context) -> Response:
    """A search held for review, as its searcher sees it (GetReviewResult): pending, or the candidates
    the reviewers confirmed, each an investigative lead, with what the threshold means per group."""
    item_id = ctx.params["item"]
    try:
        result, _ = console.run(ctx, OWN + "GetReviewResult", {"ItemId": item_id})
    except RekognitionError as failure:
        return console.page(ctx, "error.html.j2", _status(failure), page_title="Review result",
                            current="review-result", message=_error_text(failure))
    collection_id = str(result.get("CollectionId", ""))
    meaning, threshold, described_error = None, None, None
    try:
        described, _ = console.run(ctx, "DescribeCollection", {"CollectionId": collection_id})
    except RekognitionError as failure:  # e.g. the collection was deleted since
        described_error = _error_text(failure)
    else:
        floor = collection_threshold(_policy_of(console, ctx, described))
        try:  # the threshold the search used (the search page links with it); never below the policy's floor
            threshold = max(floor, _float_field_text(ctx.request.query.get("threshold", ""), floor, 0, 100))
        except ValueError:
            threshold = floor
        meaning = threshold_meaning(described.get("FaceModelVersion"), threshold)
    released = list(result.get("ReleasedCandidates") or [])
    external = _external_ids(console, ctx, collection_id,
                             [str(c["CandidateId"]) for c in released if c.get("CandidateType") == "FACE"])
    return console.page(ctx, "review_result.html.j2", page_title="Review result", current="review-result",
                        item_id=item_id, collection=collection_id, state=str(result.get("State", "")),
                        decided=result.get("DecisionCount", 0), required=result.get("RequiredReviewers", 0),
                        candidate_count=result.get("CandidateCount", 0),
                        released=[{**c, "external": external.get(str(c.get("CandidateId")))} for c in released],
                        threshold=threshold, meaning=meaning, described_error=described_error, label=LABEL)


def _external_ids(console: Console, ctx: Context, collection_id: str, face_ids: list[str]) -> dict[str, str]:
    """The ExternalImageId of each released face (ListFaces by FaceIds), so a lead names what was indexed."""
    if not face_ids:
        return {}
    try:
        listed, _ = console.run(ctx, "ListFaces", {"CollectionId": collection_id, "FaceIds": face_ids[:4096],
                                                   "MaxResults": min(len(face_ids), 4096)})
    except RekognitionError:  # the faces may be gone; the lead still stands by its FaceId
        return {}
    return {f["FaceId"]: f["ExternalImageId"] for f in listed.get("Faces", []) if f.get("ExternalImageId")}


# ---------------------------------------------------------------- the search log and transparency

# Form field -> ListSearchLogRecords member: the log page's filters.
LOG_FILTERS = (("since", "Since"), ("until", "Until"), ("kind", "Kind"), ("operation", "Operation"),
               ("collection", "CollectionId"), ("key", "KeyName"), ("outcome", "Outcome"))
LOG_PAGE = 100
CHECKPOINT_BODY = 256 * 1024  # a checkpoint's JSON (up to 64 KiB), percent-encoded
TRANSPARENCY_DAYS = 30  # the period the transparency page opens with


def _log_filters(ctx: Context) -> dict[str, str]:
    return {name: ctx.request.query.get(name, "").strip()[:255] for name, _ in LOG_FILTERS}


def log_page(console: Console, ctx: Context) -> Response:
    """The search log, newest first, filtered (ListSearchLogRecords); the verify button posts to log/verify."""
    values = _log_filters(ctx)
    request: dict[str, Any] = {member: values[name] for name, member in LOG_FILTERS if values[name]}
    request["MaxResults"] = LOG_PAGE
    token = ctx.request.query.get("next", "")
    if token:
        request["NextToken"] = token[:255]
    status, error, records, next_url = 200, None, [], None
    try:
        listed, _ = console.run(ctx, OWN + "ListSearchLogRecords", request)
    except RekognitionError as failure:  # e.g. a Since that is not a time: said with the filters kept
        status, error = _status(failure), _error_text(failure)
    else:
        records = listed.get("Records", [])
        if listed.get("NextToken"):
            next_url = console.url("/log?" + urlencode({**{k: v for k, v in values.items() if v},
                                                        "next": listed["NextToken"]}))
    return console.page(ctx, "log.html.j2", status, page_title="Search log", current="log", values=values,
                        kinds=KINDS, operations=sorted(OPERATION_ROLES), records=records, next_url=next_url,
                        error=error, filtered=any(values.values()), first_page=not token,
                        can_verify=ctx.key is not None and ctx.key.role in PAGE_ROLES["verify"])


def verify_log(console: Console, ctx: Context) -> Response:
    """Verify the whole chain (VerifySearchLog), against a checkpoint the auditor kept if one is pasted."""
    kept = ctx.request.form().get("checkpoint").strip()
    try:
        answer, _ = console.run(ctx, OWN + "VerifySearchLog", {"Checkpoint": kept} if kept else {})
    except RekognitionError as failure:
        return console.page(ctx, "log_verify.html.j2", _status(failure), page_title="Search log verification",
                            current="log", result=None, error=_error_text(failure), kept=kept)
    return console.page(ctx, "log_verify.html.j2", page_title="Search log verification", current="log",
                        result=answer, error=None, kept=kept, against_checkpoint=bool(kept),
                        checkpoint_url=console.url("/log/checkpoint.json"))


def log_checkpoint(console: Console, ctx: Context) -> Response:
    """The newest signed checkpoint, as a file to keep (for ``faceaudit log verify --checkpoint``)."""
    try:
        answer, _ = console.run(ctx, OWN + "VerifySearchLog", {})
    except RekognitionError as failure:
        return Response.text(_status(failure), _error_text(failure))
    checkpoint = answer.get("LatestCheckpoint")
    if not checkpoint:
        return Response.text(404, "The log has signed no checkpoint yet.")
    head = (answer.get("Head") or {}).get("Seq", 0)
    return Response(200, checkpoint.encode("utf-8"), "application/json; charset=utf-8",
                    headers=[("content-disposition", f'attachment; filename="faceaudit-checkpoint-{head}.json"')])


def _period(ctx: Context) -> dict[str, str]:
    since = ctx.request.query.get("since", "").strip()[:64]
    default = (datetime.now(UTC) - timedelta(days=TRANSPARENCY_DAYS)).strftime("%Y-%m-%d")
    return {"since": since or default, "until": ctx.request.query.get("until", "").strip()[:64]}


def _transparency(console: Console, ctx: Context, period: dict[str, str]) -> str:
    request = {"Since": period["since"], **({"Until": period["until"]} if period["until"] else {})}
    answer, _ = console.run(ctx, OWN + "GetTransparencyReport", request)
    return str(answer["Report"])


def transparency_page(console: Console, ctx: Context) -> Response:
    """The transparency report over the live log (GetTransparencyReport), drawn by the report's own renderer."""
    period = _period(ctx)
    try:
        report = json.loads(_transparency(console, ctx, period))
    except RekognitionError as failure:
        return console.page(ctx, "transparency_period.html.j2", _status(failure), page_title="Transparency report",
                            current="transparency", period=period, error=_error_text(failure))
    return console.page(ctx, "transparency_page.html.j2", report_styles=True, current="transparency",
                        period=period, error=None, json_url=console.url("/transparency/transparency.json?")
                        + urlencode({k: v for k, v in period.items() if v}), **transparency_context(report))


def transparency_json(console: Console, ctx: Context) -> Response:
    """The same report as ``faceaudit transparency`` writes to transparency.json."""
    try:
        text = _transparency(console, ctx, _period(ctx))
    except RekognitionError as failure:
        return Response.text(_status(failure), _error_text(failure))
    return Response(200, (text + "\n").encode("utf-8"), "application/json; charset=utf-8",
                    headers=[("content-disposition", 'attachment; filename="transparency.json"')])


_ROUTES = [
    Route("GET", ("sign-in",), sign_in_form, None),
    Route("POST", ("sign-in",), sign_in, None),
    Route("POST", ("sign-out",), sign_out, "home"),
    Route("GET", ("",), home, "home"),
    Route("GET", ("collections",), collections_page, "collections"),
    Route("POST", ("collections",), create_collection, "create-collection"),
    Route("GET", ("collections", "{collection}"), collection_page, "collection"),
    Route("POST", ("collections", "{collection}", "faces"), index_faces, "index", UPLOAD_BODY),
    Route("GET", ("search",), search_page, "search"),
    Route("POST", ("search",), search, "search", UPLOAD_BODY),
    Route("GET", ("reports",), reports_page, "reports"),
    # Not under reports/: any folder name, "compare" too, is a report's.
    Route("GET", ("report-comparison",), compare_page, "reports"),
    Route("GET", ("reports", "{report}"), report_page, "reports"),
    Route("GET", ("reports", "{report}", "report.md"), report_markdown, "reports"),
    Route("GET", ("review",), review_queue, "review"),
    Route("GET", ("review", "{item}"), review_item_page, "review-item"),
    Route("POST", ("review", "{item}"), decide_review_item, "decide", DECISION_BODY,
          form_fields=2 + 2 * MAX_CANDIDATES_DECIDED),
    Route("GET", ("results",), review_results, "review-result"),
    Route("GET", ("results", "{item}"), review_result_page, "review-result"),
    Route("GET", ("log",), log_page, "log"),
    Route("POST", ("log", "verify"), verify_log, "verify", CHECKPOINT_BODY),
    Route("GET", ("log", "checkpoint.json"), log_checkpoint, "verify"),
    Route("GET", ("transparency",), transparency_page, "transparency"),
    Route("GET", ("transparency", "transparency.json"), transparency_json, "transparency"),
]
