"""faceaudit.storage.migrations: versions run in order, once, all in the caller's transaction;
a database newer than the code is refused. On SQLite here; PostgresStore's use of it is
tested in test_postgres.py."""

from __future__ import annotations

import sqlite3

import pytest

from faceaudit.storage.migrations import current_version, latest_version, migrate
from faceaudit.storage.sqlite_transactions import immediate_transaction

MIGRATIONS = {
    1: ["CREATE TABLE people (name TEXT NOT NULL)",
        lambda conn: conn.execute("INSERT INTO people VALUES (?)", ("first",))],
    2: ["ALTER TABLE people ADD COLUMN unit TEXT"],
}


class Refused(Exception):
    pass


def connect(path):
    return sqlite3.connect(path, isolation_level=None)


def run(conn, migrations):
    with immediate_transaction(conn):
        return migrate(conn, migrations, describe="test.db", error=Refused)


def test_a_new_database_runs_every_version_in_order_and_records_the_last(tmp_path):
    conn = connect(tmp_path / "t.db")
    assert run(conn, MIGRATIONS) == 2
    assert conn.execute("SELECT name, unit FROM people").fetchall() == [("first", None)]
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    assert run(conn, MIGRATIONS) == 2  # nothing runs twice
    assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 1


def test_an_older_database_gets_only_the_newer_versions(tmp_path):
    conn = connect(tmp_path / "t.db")
    run(conn, {1: MIGRATIONS[1]})
    assert run(conn, MIGRATIONS) == 2
    assert conn.execute("SELECT name, unit FROM people").fetchall() == [("first", None)]


def test_a_failing_step_leaves_the_database_at_its_old_version(tmp_path):
    conn = connect(tmp_path / "t.db")
    run(conn, {1: MIGRATIONS[1]})
    broken = {**MIGRATIONS, 2: ["ALTER TABLE people ADD COLUMN unit TEXT", "NOT SQL"]}
    with pytest.raises(sqlite3.OperationalError):
        run(conn, broken)
    assert current_version(conn) == 1
    assert [c[1] for c in conn.execute("PRAGMA table_info(people)")] == ["name"]


def test_a_database_newer_than_the_code_is_refused(tmp_path):
    conn = connect(tmp_path / "t.db")
    run(conn, MIGRATIONS)
    with pytest.raises(Refused, match=r"test\.db has schema version 2; this faceaudit understands up to 1"):
        run(conn, {1: MIGRATIONS[1]})


def test_versions_must_be_consecutive_from_one():
    assert latest_version({}) == 0
    with pytest.raises(ValueError):
        latest_version({1: [], 3: []})
