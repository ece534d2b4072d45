"""The console's sessions, sign-in and request checks, in-process on real SQLite files (no browser, no models).

The console is an ASGI app; these tests call it as uvicorn would (a scope, receive, send), with
the real key store (faceaudit.access.SQLiteKeyStore) and session file of a temporary data directory.
No page here runs an operation: the operations entry given to the console fails the test if called.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from faceaudit.access import SQLiteKeyStore
from faceaudit.console import Console
from faceaudit.console.sessions import DB_FILENAME, SessionStore
from faceaudit.errors import InternalServerError


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_30_idle_minutes_or_8_hours(tmp_path):
    clock = Clock()
    store = SessionStore(tmp_path, clock=clock)
    session_id, _ = store.create("AKID")
    clock.now += 29 * 60
    assert store.touch(session_id) is not None  # used: the idle clock starts again
    clock.now += 29 * 60
    assert store.touch(session_id) is not None
    clock.now += 31 * 60
    assert store.touch(session_id) is None  # idle too long
    assert store.touch(session_id) is None  # and gone for good

    session_id, _ = store.create("AKID")
    for _ in range(17):  # in use every 29 minutes: 8 h 13 min after sign-in
        clock.now += 29 * 60
        alive = store.touch(session_id)
    assert alive is None  # the 8-hour lifetime ended it despite the use
    store.close()


def test_the_file_holds_no_session_id_and_only_its_owner_may_read_it(tmp_path):
    store = SessionStore(tmp_path)
    session_id, session = store.create("AKID")
    path = tmp_path / DB_FILENAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id_sha256, csrf FROM sessions").fetchall()
    assert rows == [(hashlib.sha256(session_id.encode()).hexdigest(), session.csrf)]
    assert session_id.encode() not in path.read_bytes()
    assert store.touch("not-" + session_id) is None
    store.close()


def test_sign_in_failures_are_limited_per_address_and_age_out(tmp_path):
    clock = Clock()
    store = SessionStore(tmp_path, clock=clock, sign_in_failures=3, sign_in_window_seconds=60)
    for _ in range(3):
        assert store.sign_in_allowed("10.0.0.1")
        store.record_failure("10.0.0.1")
    assert not store.sign_in_allowed("10.0.0.1")
    assert store.sign_in_allowed("10.0.0.2")  # another address is not held up
    assert 1 <= store.retry_after_seconds("10.0.0.1") <= 60
    clock.now += 61
    assert store.sign_in_allowed("10.0.0.1")
    store.close()


def test_a_console_db_from_before_versioned_schemas_keeps_its_sessions(tmp_path):
    # console.db as earlier releases left it: the tables, no schema_version, a live session.
    session_id, now_ms = "an-old-session", 1_800_000_000_000
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        conn.executescript("""
            CREATE TABLE sessions (id_sha256 TEXT PRIMARY KEY, access_key_id TEXT NOT NULL,
                csrf TEXT NOT NULL, created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
            CREATE INDEX sessions_by_key ON sessions (access_key_id);
            CREATE TABLE sign_in_failures (client TEXT NOT NULL, at_ms INTEGER NOT NULL);
            CREATE INDEX sign_in_failures_by_client ON sign_in_failures (client, at_ms);""")
        conn.execute("INSERT INTO sessions VALUES (?, 'AKID', 'the-csrf', ?, ?)",
                     (hashlib.sha256(session_id.encode()).hexdigest(), now_ms, now_ms))
        conn.execute("INSERT INTO sign_in_failures VALUES ('10.0.0.1', ?)", (now_ms,))
    os.chmod(tmp_path / DB_FILENAME, 0o600)
    clock = Clock(now_ms / 1000 + 60)
    store = SessionStore(tmp_path, clock=clock, sign_in_failures=2)
    session = store.touch(session_id)
    assert session is not None and (session.access_key_id, session.csrf) == ("AKID", "the-csrf")
    store.record_failure("10.0.0.1")
    assert not store.sign_in_allowed("10.0.0.1")  # the failure from before counts
    store.close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    reopened = SessionStore(tmp_path, clock=clock)  # and opens again at version 1
    assert reopened.touch(session_id) is not None
    reopened.close()


def test_a_console_db_from_a_newer_faceaudit_is_refused(tmp_path):
    SessionStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(InternalServerError, match="schema version 99"):
        SessionStore(tmp_path)


# -- the ASGI app, in-process ------------------------------------------------------------------


def _refuse_operations(caller, operation, request, facts):
    raise AssertionError(f"no page in these tests runs an operation, but {operation} was called")


class Browserless:
    """Just enough of a browser: a cookie jar, form posts, and the ASGI call."""

    def __init__(self, console: Console, *, scheme: str = "http", client: str = "127.0.0.1"):
        self.console, self.scheme, self.client = console, scheme, client
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None):
        body = urlencode(form).encode() if form is not None else b""
        sent = {"host": "console.test", **(headers or {})}
        if form is not None:
            sent["content-type"] = "application/x-www-form-urlencoded"
            sent["content-length"] = str(len(body))
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        path_only, _, query = path.partition("?")
        scope = {"type": "http", "method": method, "path": path_only, "raw_path": path_only.encode(),
                 "query_string": query.encode(), "scheme": self.scheme, "client": (self.client, 5000),
                 "headers": [(k.encode(), v.encode()) for k, v in sent.items()]}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent_back: list[dict] = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent_back.append(message)

        # A thread of its own: Playwright's sync API (the browser tests) keeps an event loop on this one.
        with ThreadPoolExecutor(max_workers=1) as thread:
            thread.submit(asyncio.run, self.console(scope, receive, send)).result()
        start = sent_back[0]
        headers_back = [(k.decode(), v.decode()) for k, v in start["headers"]]
        for name, value in headers_back:
            if name == "set-cookie":
                cookie, _, attributes = value.partition(";")
                key, _, val = cookie.partition("=")
                if "Max-Age=0" in attributes:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        return start["status"], headers_back, sent_back[1]["body"].decode()

    def sign_in(self, access_key_id: str, secret: str):
        _, _, page = self.request("GET", "/console/sign-in")
        token = re.search(r'name="token" value="([^"]+)"', page).group(1)
        return self.request("POST", "/console/sign-in",
                            {"token": token, "access_key_id": access_key_id, "secret": secret})


@pytest.fixture
def keys(tmp_path):
    store = SQLiteKeyStore(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def console(tmp_path, keys):
    sessions = SessionStore(tmp_path / "data", sign_in_failures=3)
    app = Console(_refuse_operations, keys, tmp_path / "data", sessions=sessions)
    yield app
    app.close()


def _header(headers, name):
    return [v for k, v in headers if k == name]


def test_sign_in_sets_a_strict_http_only_cookie_secure_over_tls(console, keys):
    issued = keys.create("ana", "auditor")
    for scheme, secure in (("http", False), ("https", True)):
        client = Browserless(console, scheme=scheme)
        status, headers, _ = client.sign_in(issued.key.access_key_id, issued.secret_access_key)
        assert status == 303 and _header(headers, "location") == ["/console/"]
        cookie = next(v for v in _header(headers, "set-cookie") if v.startswith("faceaudit_console="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert ("Secure" in cookie) is secure
        assert bool(_header(headers, "strict-transport-security")) is secure
        status, headers, page = client.request("GET", "/console/")
        assert status == 200 and "Signed in as <strong>ana</strong> (auditor)" in page
        csp = _header(headers, "content-security-policy")[0]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert _header(headers, "x-frame-options") == ["DENY"]
        assert _header(headers, "cache-control") == ["no-store"]


def test_a_wrong_secret_is_refused_and_the_address_is_then_held_up(console, keys):
    issued = keys.create("ana", "operator")
    client = Browserless(console, client="192.0.2.7")
    for wrong in ("x", issued.secret_access_key[:-1], ""):
        status, _, page = client.sign_in(issued.key.access_key_id, wrong)
        assert status == 401 and "secret is wrong" in page
    status, headers, page = client.sign_in(issued.key.access_key_id, issued.secret_access_key)
    assert status == 429 and "Too many failed sign-ins" in page  # even with the right secret
    assert int(_header(headers, "retry-after")[0]) >= 1
    status, _, _ = Browserless(console, client="192.0.2.8").sign_in(
        issued.key.access_key_id, issued.secret_access_key)
    assert status == 303  # another address signs in


def test_a_revoked_key_cannot_sign_in_and_its_sessions_end_at_once(console, keys):
    issued = keys.create("ana", "operator")
    client = Browserless(console)
    assert client.sign_in(issued.key.access_key_id, issued.secret_access_key)[0] == 303
    assert client.request("GET", "/console/")[0] == 200
    keys.revoke("ana")
    status, headers, _ = client.request("GET", "/console/")
    assert status == 303 and _header(headers, "location") == ["/console/sign-in?notice=revoked"]
    assert "faceaudit_console" not in client.cookies
    assert Browserless(console).sign_in(issued.key.access_key_id, issued.secret_access_key)[0] == 401


def test_sign_in_needs_the_forms_own_token(console, keys):
    issued = keys.create("ana", "operator")
    client = Browserless(console)
    status, _, _ = client.request("POST", "/console/sign-in", {
        "token": "forged", "access_key_id": issued.key.access_key_id, "secret": issued.secret_access_key})
    assert status == 403 and "faceaudit_console" not in client.cookies


def test_posts_need_the_sessions_csrf_token_and_this_sites_origin(console, keys):
    issued = keys.create("ana", "operator")
    client = Browserless(console)
    client.sign_in(issued.key.access_key_id, issued.secret_access_key)
    _, _, page = client.request("GET", "/console/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.request("POST", "/console/sign-out", {})[0] == 403
    assert client.request("POST", "/console/sign-out", {"csrf": csrf + "x"})[0] == 403
    assert client.request("POST", "/console/sign-out", {"csrf": csrf},
                          headers={"origin": "https://elsewhere.example"})[0] == 403
    assert client.request("GET", "/console/")[0] == 200  # none of those signed ana out
    status, headers, _ = client.request("POST", "/console/sign-out", {"csrf": csrf},
                                        headers={"origin": "http://console.test"})
    assert status == 303 and _header(headers, "location") == ["/console/sign-in?notice=signed-out"]
    assert client.request("GET", "/console/")[0] == 303


def test_pages_answer_403_to_roles_they_are_not_for(console, keys):
    for role, allowed, refused in (
            ("reviewer", ["/console/"], ["/console/collections", "/console/search", "/console/reports",
                                         "/console/results", "/console/results/" + "0" * 36, "/console/log",
                                         "/console/log/checkpoint.json", "/console/transparency"]),
            ("auditor", ["/console/", "/console/reports"], ["/console/collections", "/console/search",
                                                            "/console/review", "/console/review/" + "0" * 36,
                                                            "/console/results"])):
        issued = keys.create(f"k-{role}", role)
        client = Browserless(console)
        client.sign_in(issued.key.access_key_id, issued.secret_access_key)
        for path in allowed:
            assert client.request("GET", path)[0] == 200, (role, path)
        for path in refused:
            status, _, page = client.request("GET", path)
            assert status == 403 and f"has the role {role}" in page, (role, path)
        # A form post of a page the role is not for is refused before its body is read.
        _, _, home = client.request("GET", "/console/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', home).group(1)
        assert client.request("POST", "/console/search", {"csrf": csrf, "collection": "c"})[0] == 403
        assert client.request("POST", "/console/collections/c/faces", {"csrf": csrf})[0] == 403
        if role != "reviewer":  # only reviewers decide review items
            assert client.request("POST", "/console/review/" + "0" * 36, {"csrf": csrf})[0] == 403
        else:  # and they verify no log
            assert client.request("POST", "/console/log/verify", {"csrf": csrf})[0] == 403


def test_signed_out_requests_go_to_sign_in_without_reading_the_body(console):
    client = Browserless(console)
    status, headers, _ = client.request("POST", "/console/search", {"x": "y" * 10})
    assert status == 303 and _header(headers, "location") == ["/console/sign-in"]
    assert _header(headers, "connection") == ["close"]  # the unread body must not be read as a request
    status, headers, _ = client.request("GET", "/console/collections", headers={"cookie": "faceaudit_console=made-up"})
    assert status == 303 and _header(headers, "location") == ["/console/sign-in?notice=expired"]
    assert client.request("GET", "/console/nowhere")[0] == 404
    assert client.request("DELETE", "/console/")[0] == 405


def test_docs_show_exactly_who_each_page_is_for():
    """docs/console.md's table of pages and roles is PAGE_ROLES, cell by cell."""
    from pathlib import Path

    from faceaudit.access import ROLES
    from faceaudit.console import PAGE_ROLES

    rows = {"start": "home", "collections": "collections", "create a collection": "create-collection",
            "one collection, its faces": "collection", "index a face": "index", "search by image": "search",
            "audit reports, one report, a comparison": "reports", "review queue": "review",
            "one review item, blind": "review-item", "decide a review item": "decide",
            "a search's review result": "review-result", "search log, its filters": "log",
            "verify the chain, the latest checkpoint": "verify", "transparency report": "transparency"}
    text = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text(encoding="utf-8")
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in rows and len(cells) == 2 + len(ROLES):
            table[rows[cells[0]]] = tuple(role for role, cell in zip(ROLES, cells[2:]) if cell == "yes")
    assert table == {page: tuple(r for r in ROLES if r in roles) for page, roles in PAGE_ROLES.items()}


def test_urlencoded_forms_arrive_as_typed_and_are_limited_in_fields():
    """A reason typed with spaces, a plus or an accent reaches the operation as typed (browsers send
    ``a+b``, ``%2B``, ``%C3%A9``), and a form with more fields than its page takes is refused."""
    from faceaudit.console.web import FormError, Request

    def posted(body: bytes, max_fields: int = 20) -> Request:
        return Request("POST", "/", {}, {"content-type": "application/x-www-form-urlencoded"}, {}, "-", False,
                       body=body, max_fields=max_fields)

    assert posted(b"reason-0=same+jaw%2C+same+eyes&plus=%2B&e=caf%C3%A9&empty=").form().fields == {
        "reason-0": "same jaw, same eyes", "plus": "+", "e": "café", "empty": ""}
    with pytest.raises(FormError, match="too many"):
        posted(b"&".join(b"f%d=1" % i for i in range(21))).form()
    assert len(posted(b"&".join(b"f%d=1" % i for i in range(21)), max_fields=202).form().fields) == 21
