"""The accountability stores' suites run on both databases they can live in.

``database`` is parametrized: "embedded" gives None (the SQLite files in the data
directory, as today), "postgres" a URL of the session's PostgreSQL whose search_path is a
schema of the test's own (what ``faceaudit serve --database`` hands the stores).
``raw_sql(filename, statement, parameters)`` runs one statement straight on the database a
store of ``data_dir`` uses -- the SQLite file ``data_dir/filename``, or the test's schema --
for tests that tamper with what is stored, or read it behind the store's back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

BACKENDS = ("embedded", "postgres")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def database(backend, request):
    """None (embedded) or the postgresql:// URL of a fresh schema, dropped afterwards."""
    if backend == "embedded":
        yield None
        return
    from support.postgres import create_schema, drop_schema, fresh_schema, url_with_schema

    url = request.getfixturevalue("postgres_url")
    schema = fresh_schema()
    create_schema(url, schema)
    try:
        yield url_with_schema(url, schema)
    finally:
        drop_schema(url, schema)


@pytest.fixture
def raw_sql(database):
    def run(data_dir: str | Path, filename: str, statement: str, parameters: tuple = ()) -> list[tuple]:
        if database is None:
            conn = sqlite3.connect(Path(data_dir) / filename, isolation_level=None)
            try:
                return conn.execute(statement, parameters).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), parameters or None)
            return cursor.fetchall() if cursor.description else []

    return run


class _PostgresRaw:
    """A psycopg connection taking SQLite's ``?`` placeholders, for tests that tamper."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, statement: str, parameters: tuple = ()):
        return self._conn.execute(statement.replace("?", "%s"), parameters or None)


@pytest.fixture
def connect_raw(database):
    """``connect_raw(data_dir, filename)``: a context manager giving an autocommit connection
    straight to the database the stores of ``data_dir`` use (sqlite3, or psycopg taking ``?``)."""
    from contextlib import contextmanager

    @contextmanager
    def connect(data_dir: str | Path, filename: str):
        if database is None:
            conn = sqlite3.connect(Path(data_dir) / filename, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
            return
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            yield _PostgresRaw(conn)

    return connect


@pytest.fixture
def server_database(database, monkeypatch):
    """``database``, also as FACEAUDIT_DATABASE: what the commands (`faceaudit log ...`) follow, as the server does."""
    from faceaudit.settings import DATABASE_ENV

    if database is None:
        monkeypatch.delenv(DATABASE_ENV, raising=False)
    else:
        monkeypatch.setenv(DATABASE_ENV, database)
    return database
