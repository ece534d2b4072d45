"""ThreadConnections: one WAL, synchronous=FULL connection per thread, closed with its thread."""

from __future__ import annotations

import gc
import sqlite3
import threading

import pytest

from faceaudit.storage.sqlite_connections import ThreadConnections


def test_each_thread_has_its_own_connection_in_wal_and_full_mode(tmp_path):
    connections = ThreadConnections(tmp_path / "x.db", busy_timeout=1.0, unavailable=RuntimeError,
                                    pragmas=("foreign_keys = ON",))
    mine = connections.get()
    assert connections.get() is mine
    assert mine.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert mine.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert mine.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    seen = []
    thread = threading.Thread(target=lambda: seen.append(connections.get()))
    thread.start()
    thread.join()
    assert seen[0] is not mine
    seen.clear()
    gc.collect()
    assert len(connections._holders) == 1  # the ended thread's connection went with it
    connections.close()
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")
    assert connections.get().execute("SELECT 1").fetchone() == (1,)  # reopened after close
    connections.close()


def test_a_file_that_cannot_be_put_in_wal_mode_raises_the_callers_error(tmp_path):
    class Unavailable(Exception):
        pass

    connections = ThreadConnections(":memory:", busy_timeout=1.0, unavailable=Unavailable)
    with pytest.raises(Unavailable, match="WAL"):
        connections.get()


def test_a_write_is_committed_for_every_thread_or_rolled_back_whole(tmp_path):
    connections = ThreadConnections(tmp_path / "x.db", busy_timeout=1.0, unavailable=RuntimeError)
    with connections.write() as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), connections.write() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    seen = []
    thread = threading.Thread(target=lambda: seen.extend(connections.get().execute("SELECT v FROM t")))
    thread.start()
    thread.join()
    assert seen == [(1,)]
    assert not connections.get().in_transaction
    connections.close()
