"""The one write transaction both SQLite files use (faces in embedded.py, keys in access/sqlite.py).

BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails midway trying to
upgrade a read lock while another process writes; anything raised inside rolls it back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on ``conn``; ROLLBACK if the body (or COMMIT) raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
