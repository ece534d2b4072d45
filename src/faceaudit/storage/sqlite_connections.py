"""One SQLite connection per thread to one database file, in WAL mode with synchronous=FULL.

Used by the key store (access/sqlite.py) and the review store (accountability/review.py).
A connection is never shared between threads: each thread opens its own on first use,
and the connection is closed when that thread ends. A forked child opens new connections
and leaves the parent's alone: closing a SQLite connection inherited across fork() can
release locks the parent still holds, so those connections are kept referenced and never
used. ``close`` closes every live connection; a later ``get`` opens a new one. ``write`` is
the stores' one write transaction (BEGIN IMMEDIATE, storage.sqlite_transactions) on it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from faceaudit.storage.sqlite_transactions import immediate_transaction

__all__ = ["ThreadConnections"]

_FORK_ORPHANS: list = []  # connections inherited from a parent process: kept, never closed or used


class _Holder:
    """Weak-referenceable owner of one thread's connection (sqlite3.Connection is not)."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn


class ThreadConnections:
    """Per-thread connections to ``path``; ``unavailable(message)`` is raised when WAL mode cannot be had."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float,
                 unavailable: Callable[[str], Exception], pragmas: Iterable[str] = ()):
        self.path = Path(path)
        self._busy_timeout = float(busy_timeout)
        self._unavailable = unavailable
        self._pragmas = tuple(pragmas)  # e.g. "foreign_keys = ON"
        self._pid = os.getpid()
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise self._unavailable(f"could not put {self.path} in WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")  # an acknowledged change survives a power cut
        for pragma in self._pragmas:
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        if self._pid != os.getpid():
            with self._lock:
                _FORK_ORPHANS.append((self._local, list(self._holders)))
            self._pid, self._local, self._holders = os.getpid(), threading.local(), weakref.WeakSet()
            self._lock = threading.Lock()
        holder = getattr(self._local, "holder", None)
        if holder is None:
            holder = self._local.holder = _Holder(self._connect())
            with self._lock:
                self._holders.add(holder)
        return holder.conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection: committed at the end, rolled back on an error."""
        with immediate_transaction(self.get()) as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            holders, self._holders = list(self._holders), weakref.WeakSet()
        for holder in holders:
            try:
                holder.conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
