"""The audit's on-disk cache of a target's answers, so that an interrupted audit resumes.

One SQLite file, ``<cache dir>/responses.sqlite`` (default cache dir
``~/.cache/faceaudit/audit``), table ``entries(key, kind, value, created)``:

* ``key`` is the SHA-256 of a JSON list naming everything the answer depends
  on: the target's fingerprint (its endpoint and FaceModelVersion), the
  operation, the image's SHA-256 (of its bytes, so moving or renaming a
  dataset keeps its cache) and the request parameters;
* ``value`` is the response as zlib-compressed JSON (boto3's ResponseMetadata
  dropped), or ``{"Error": {"Code": ..., "Message": ...}}`` for an image the
  target refused for a reason of its own (a corrupt file gives the same error
  every time).

Every ``put`` is one SQLite transaction (WAL mode), so an entry is either
fully written or absent, whatever kills the process; several audits may share
one cache directory at once. Entries are never invalidated: a new model
version or endpoint is a new fingerprint, hence new keys. Delete the folder to
start afresh.

``ResponseCache(None)`` keeps the same entries in memory only (no resume).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from faceaudit.settings import Settings

DB_FILENAME = "responses.sqlite"
BUSY_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """The "audit" folder of faceaudit's cache (Settings.cache_root(): $FACEAUDIT_CACHE_DIR,
    else $XDG_CACHE_HOME/faceaudit, else ~/.cache/faceaudit)."""
    return Settings.from_env().cache_root() / "audit"


def cache_key(*parts: Any) -> str:
    """A stable key for JSON-serialisable parts (dicts with sorted keys)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ResponseCache:
    """Key -> JSON value, in ``directory/responses.sqlite`` or (``directory=None``) in memory."""

    def __init__(self, directory: str | os.PathLike | None):
        self.directory = None if directory is None else Path(directory).expanduser()
        if self.directory is not None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = str(self.directory / DB_FILENAME)
        else:
            target = ":memory:"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if self.directory is not None:
            self._conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a killed process loses nothing committed; a power cut
            # may lose the last entries, which the rerun then simply recomputes.
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                           "value BLOB NOT NULL, created REAL NOT NULL)")

    @property
    def persistent(self) -> bool:
        return self.directory is not None

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(zlib.decompress(row[0]))

    def put(self, key: str, kind: str, value: Any) -> None:
        blob = zlib.compress(json.dumps(value, separators=(",", ":"), default=str).encode("utf-8"))
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO entries (key, kind, value, created) VALUES (?, ?, ?, ?)",
                               (key, kind, blob, time.time()))

    def delete(self, key: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM entries WHERE key = ?", (key,))

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM entries WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
