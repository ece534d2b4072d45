"""The progress ledger of a batch job: which images are done, pending or failed, so a rerun resumes.

One SQLite file (WAL), ``<data dir>/batch-ledger.sqlite``, table
``items(job, source, sha256, state, face_ids, error, message, at)``, one row per
image of a job (``job`` names the collection or the extraction). States:

* ``pending``: the image's faces are about to be written to the store (their
  FaceIds are recorded *before* the write);
* ``done``: the write committed (FaceIds recorded) -- also for an image with no face;
* ``failed``: the target refused the image (Rekognition error code and message).

A batch's IndexFaces writes go to the store in one transaction between its
``pending`` and ``done`` marks. A process killed between the two leaves rows
``pending``: the rerun asks the store whether their FaceIds are there (all or
none are, the write being one transaction) and marks them done or indexes them
again -- never twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faceaudit.storage.sqlite_transactions import immediate_transaction

LEDGER_FILENAME = "batch-ledger.sqlite"


def index_job(collection_id: str, database: str | None = None) -> str:
    """The ledger's job name for indexing into ``collection_id`` of the store ``database`` names
    (None or "embedded": the data folder's own store, ``index:ID``; a PostgreSQL URL: the
    collection and a digest of where the database is, without its password, so that one data
    folder's ledger never mistakes one database's done images for another's)."""
    if not database or database == "embedded":
        return f"index:{collection_id}"
    import hashlib

    from psycopg.conninfo import conninfo_to_dict

    where = {name: str(value) for name, value in conninfo_to_dict(database).items()
             if name not in ("password", "passfile")}
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()[:12]
    return f"index:{collection_id}@postgresql:{digest}"


@dataclass(frozen=True)
class LedgerRow:
    source: str
    sha256: str | None
    state: str
    face_ids: tuple[str, ...] = ()
    error: str | None = None
    message: str | None = None


class Ledger:
    def __init__(self, directory: str | os.PathLike[str], job: str):
        self.path = Path(directory) / LEDGER_FILENAME
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.job = job
        self._conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS items (job TEXT NOT NULL, source TEXT NOT NULL, "
                           "sha256 TEXT, state TEXT NOT NULL, face_ids TEXT NOT NULL, error TEXT, message TEXT, "
                           "at REAL NOT NULL, PRIMARY KEY (job, source))")

    def _write(self, rows: Sequence[LedgerRow]) -> None:
        if not rows:
            return
        now = time.time()
        with immediate_transaction(self._conn):
            self._conn.executemany(
                "INSERT OR REPLACE INTO items (job, source, sha256, state, face_ids, error, message, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.job, r.source, r.sha256, r.state, json.dumps(list(r.face_ids)), r.error, r.message, now)
                 for r in rows])

    def record(self, rows: Sequence[LedgerRow]) -> None:
        """Write these rows (any states) in one transaction."""
        self._write(rows)

    def forget(self, sources: Iterable[str]) -> None:
        with immediate_transaction(self._conn):
            self._conn.executemany("DELETE FROM items WHERE job = ? AND source = ?",
                                   [(self.job, s) for s in sources])

    def finished(self, sources: Sequence[str]) -> set[str]:
        """Those of ``sources`` that are done or failed."""
        found: set[str] = set()
        for start in range(0, len(sources), 500):
            part = list(sources[start:start + 500])
            marks = ",".join("?" * len(part))
            found.update(row[0] for row in self._conn.execute(
                f"SELECT source FROM items WHERE job = ? AND state IN ('done', 'failed') AND source IN ({marks})",
                [self.job, *part]))
        return found

    def rows(self, state: str) -> list[LedgerRow]:
        return [LedgerRow(source, sha, state, tuple(json.loads(ids)), error, message)
                for source, sha, ids, error, message in self._conn.execute(
                    "SELECT source, sha256, face_ids, error, message FROM items WHERE job = ? AND state = ? "
                    "ORDER BY source", (self.job, state))]

    def counts(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT state, COUNT(*) FROM items WHERE job = ? GROUP BY state",
                                       (self.job,)).fetchall())

    def close(self) -> None:
        self._conn.close()
