"""The console's server-side sessions and its sign-in rate limit, in ``DATA_DIR/console.db``.

Why SQLite in the data directory rather than memory: ``faceaudit serve --workers N`` runs N
processes behind one socket, and a browser's requests land on any of them. A session made by
one worker must be known to the others, and a sign-out or an expiry must end it for all; so
must the count of failed sign-ins from one address, or N workers would allow N times the
attempts. The file is made 0600 (SQLite gives -wal and -shm the same mode), like access.db.
It is opened as the other stores open theirs: one connection per thread
(faceaudit.storage.sqlite_connections) and a versioned schema (faceaudit.storage.migrations).

What is kept per session: the SHA-256 of its id (the id itself lives only in the browser's
cookie, so a copy of this file opens no session), the access key id it signed in with, its
CSRF token, and when it started and was last used. Never a secret, never an image.

Expiry: ``idle`` without a request (default 30 minutes) or ``lifetime`` after sign-in
(default 8 hours), whichever comes first. The key is looked up again on every request by the
console, so a revoked or rotated key ends its sessions at once (faceaudit.console.app).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faceaudit.errors import InternalServerError
from faceaudit.storage.migrations import Step, latest_version, migrate
from faceaudit.storage.sqlite_connections import ThreadConnections

DB_FILENAME = "console.db"
DEFAULT_IDLE_SECONDS = 30 * 60
DEFAULT_LIFETIME_SECONDS = 8 * 60 * 60
# Failed sign-ins allowed per client address within the window; then refused until old ones age out.
DEFAULT_SIGN_IN_FAILURES = 10
DEFAULT_SIGN_IN_WINDOW_SECONDS = 5 * 60
_BUSY_TIMEOUT_S = 5.0

# IF NOT EXISTS: console.db files made before the schema was versioned have these tables and no
# schema_version; version 1 adopts them as they are.
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sessions (
        id_sha256     TEXT    PRIMARY KEY,
        access_key_id TEXT    NOT NULL,
        csrf          TEXT    NOT NULL,
        created_ms    INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_by_key ON sessions (access_key_id)",
    """CREATE TABLE IF NOT EXISTS sign_in_failures (
        client TEXT    NOT NULL,
        at_ms  INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sign_in_failures_by_client ON sign_in_failures (client, at_ms)",
]
# faceaudit.storage.migrations: version 1 creates the schema; a change is a new version.
MIGRATIONS: dict[int, list[Step]] = {1: list(_SCHEMA)}
SCHEMA_VERSION = latest_version(MIGRATIONS)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    """A live session: who signed in, and the token every form of theirs must carry back."""

    access_key_id: str
    csrf: str
    created_ms: int
    last_seen_ms: int

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    """Sessions and sign-in failures in ``data_dir/console.db`` (shared by every worker process)."""

    def __init__(self, data_dir: str | os.PathLike, *, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                 lifetime_seconds: float = DEFAULT_LIFETIME_SECONDS,
                 sign_in_failures: int = DEFAULT_SIGN_IN_FAILURES,
                 sign_in_window_seconds: float = DEFAULT_SIGN_IN_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.time):
        self.path = Path(data_dir) / DB_FILENAME
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):  # session hashes and CSRF tokens: the owner's only
            os.chmod(self.path, 0o600)
        self.idle_ms = int(idle_seconds * 1000)
        self.lifetime_ms = int(lifetime_seconds * 1000)
        self.sign_in_failures = sign_in_failures
        self.sign_in_window_ms = int(sign_in_window_seconds * 1000)
        self._clock = clock
        # synchronous NORMAL after ThreadConnections' FULL: a session lost to a power cut means signing in again
        self._connections = ThreadConnections(self.path, busy_timeout=_BUSY_TIMEOUT_S, unavailable=InternalServerError,
                                              pragmas=("synchronous = NORMAL",))
        with self._connections.write() as conn:
            migrate(conn, MIGRATIONS, describe=str(self.path), error=InternalServerError)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    # --- sessions

    def create(self, access_key_id: str) -> tuple[str, Session]:
        """A new session for a key that just proved its secret: (the cookie's id, the session)."""
        session_id = secrets.token_urlsafe(32)
        now = self._now_ms()
        session = Session(access_key_id, secrets.token_urlsafe(32), now, now)
        with self._connections.write() as conn:
            # Expired sessions go whenever someone signs in: the table stays as small as its live sessions.
            conn.execute("DELETE FROM sessions WHERE last_seen_ms < ? OR created_ms < ?",
                         (now - self.idle_ms, now - self.lifetime_ms))
            conn.execute("INSERT INTO sessions (id_sha256, access_key_id, csrf, created_ms, last_seen_ms) "
                         "VALUES (?, ?, ?, ?, ?)", (_digest(session_id), access_key_id, session.csrf, now, now))
        return session_id, session

    def touch(self, session_id: str) -> Session | None:
        """The live session with this id, its last use set to now; None (and deleted) once expired."""
        digest = _digest(session_id)
        now = self._now_ms()
        with self._connections.write() as conn:
            row = conn.execute("SELECT access_key_id, csrf, created_ms, last_seen_ms FROM sessions "
                               "WHERE id_sha256 = ?", (digest,)).fetchone()
            if row is None:
                return None
            if now - row[3] > self.idle_ms or now - row[2] > self.lifetime_ms:
                conn.execute("DELETE FROM sessions WHERE id_sha256 = ?", (digest,))
                return None
            conn.execute("UPDATE sessions SET last_seen_ms = ? WHERE id_sha256 = ?", (now, digest))
        return Session(row[0], row[1], row[2], now)

    def end(self, session_id: str) -> None:
        with self._connections.write() as conn:
            conn.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_digest(session_id),))

    def end_all_for(self, access_key_id: str) -> int:
        """End every session of a key (found revoked); returns how many there were."""
        with self._connections.write() as conn:
            return conn.execute("DELETE FROM sessions WHERE access_key_id = ?", (access_key_id,)).rowcount

    # --- the sign-in rate limit

    def sign_in_allowed(self, client: str) -> bool:
        """False once ``client`` failed ``sign_in_failures`` times within the window."""
        since = self._now_ms() - self.sign_in_window_ms
        count = self._conn().execute("SELECT COUNT(*) FROM sign_in_failures WHERE client = ? AND at_ms >= ?",
                                     (client, since)).fetchone()[0]
        return int(count) < self.sign_in_failures

    def retry_after_seconds(self, client: str) -> int:
        """Seconds until the oldest counted failure of ``client`` leaves the window."""
        since = self._now_ms() - self.sign_in_window_ms
        oldest = self._conn().execute("SELECT MIN(at_ms) FROM sign_in_failures WHERE client = ? AND at_ms >= ?",
                                      (client, since)).fetchone()[0]
        return 1 if oldest is None else max(1, -(-(oldest - since) // 1000))

    def record_failure(self, client: str) -> None:
        now = self._now_ms()
        with self._connections.write() as conn:
            conn.execute("DELETE FROM sign_in_failures WHERE at_ms < ?", (now - self.sign_in_window_ms,))
            conn.execute("INSERT INTO sign_in_failures (client, at_ms) VALUES (?, ?)", (client, now))

    def close(self) -> None:
        self._connections.close()
