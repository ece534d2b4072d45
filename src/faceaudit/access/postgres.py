"""PostgresKeyStore: the access keys in PostgreSQL, in the same database as the faces.

When ``faceaudit serve --database postgresql://...`` keeps the faces in PostgreSQL, the keys
live there too (table ``access_keys``, versioned by faceaudit.storage.migrations in its own
``access_schema_version``): every server on that database sees a new, revoked or rotated
key on its next request, as servers sharing a data folder do with SQLiteKeyStore.

It is SQLiteKeyStore with another connection: the statements are written in the SQL both
databases accept, and ``_Connection`` turns their ``?`` placeholders into psycopg's ``%s``;
each statement runs in a savepoint, so a duplicate key (which SQLiteKeyStore catches and
explains) leaves the transaction usable, as it does in SQLite. Every write transaction
first takes an advisory lock, which serialises key changes as SQLite's write lock does
(the next ``seq`` is read, then written). Secrets are kept as SigV4 requires, in clear
(docs/access.md): the database's own access control is what protects them.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from faceaudit.access.keys import KeyStoreError, KeyStoreUnavailable
from faceaudit.access.sqlite import SQLiteKeyStore
from faceaudit.storage.migrations import Step, latest_version, migrate

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_KEYS_LOCK = 0x6B657973  # "keys": the advisory lock of key changes
VERSION_TABLE = "access_schema_version"

_SCHEMA: list[Step] = [
    """CREATE TABLE access_keys (
        access_key_id  TEXT    PRIMARY KEY,
        secret         TEXT    NOT NULL,
        name           TEXT    NOT NULL,
        role           TEXT    NOT NULL,
        unit           TEXT,
        origin         TEXT    NOT NULL,
        created_ms     BIGINT  NOT NULL,
        revoked_ms     BIGINT,
        revoked_reason TEXT,
        replaced_by    TEXT,
        seq            BIGINT  NOT NULL UNIQUE
    )""",
    "CREATE UNIQUE INDEX access_keys_active_name ON access_keys (name) WHERE revoked_ms IS NULL",
]
MIGRATIONS: dict[int, list[Step]] = {1: _SCHEMA}
SCHEMA_VERSION = latest_version(MIGRATIONS)


class _Connection:
    """A psycopg connection that takes SQLite's ``?`` placeholders, one savepoint a statement."""

    def __init__(self, conn: Any):
        self._conn = conn

    def execute(self, sql: str, parameters: tuple = ()) -> Any:
        with self._conn.transaction():
            cursor = self._conn.execute(sql.replace("?", "%s"), parameters)
            # fetched inside the savepoint; a cursor over what it returned
            rows = cursor.fetchall() if cursor.description else []
        return _Rows(rows)


class _Rows:
    def __init__(self, rows: list):
        self._rows = rows

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return list(self._rows)

    def __iter__(self):
        return iter(self._rows)


class PostgresKeyStore(SQLiteKeyStore):
    """KeyStore (faceaudit.access.keys) in the PostgreSQL database at ``dsn``."""

    _integrity_errors = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)

    def __init__(self, dsn: str, *, schema: str | None = None, pool_size: int = 2,
                 connect_timeout: float = 10.0):
        from psycopg_pool import ConnectionPool

        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise KeyStoreError(f"schema {schema!r}: lower-case letters, digits and _")
        kwargs: dict[str, Any] = {"autocommit": True}
        if schema is not None:
            kwargs["options"] = f"-c search_path={schema},public"
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout))) as conn:
                if schema is not None:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
                        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except psycopg.OperationalError as error:
            raise KeyStoreUnavailable(f"could not connect to the key database: {error}") from None
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs=kwargs,
                                    timeout=connect_timeout, open=False, name="faceaudit-keys")
        self._pool.open(wait=True, timeout=connect_timeout)
        self._lock = threading.Lock()
        with self._write() as conn:
            migrate(conn, MIGRATIONS, describe="the key tables of the PostgreSQL database",
                    error=KeyStoreError, table=VERSION_TABLE)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
                yield _Connection(conn)
        except psycopg.Error as error:  # rolled back already
            raise KeyStoreUnavailable(f"the key database could not be written: {error}") from error

    def _rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(sql.replace("?", "%s"), parameters).fetchall()
        except psycopg.Error as error:
            raise KeyStoreUnavailable(f"the key database could not be read: {error}") from error

    def __enter__(self) -> PostgresKeyStore:
        return self

    def close(self) -> None:
        self._pool.close()
