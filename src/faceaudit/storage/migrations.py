"""One schema-migration runner for every database faceaudit keeps (SQLite and PostgreSQL).

A database records the version of its schema in a one-row table ``schema_version`` (or
another name, when two components keep their tables in one database: the PostgreSQL key
store's is ``access_schema_version``, beside the faces' ``schema_version``, and the
accountability stores' are ``accountability_schema_version``, ``review_schema_version`` and
``searchlog_schema_version``; faceaudit.storage.sql_database opens their databases).
A store lists its migrations as ``{version: steps}``: version 1 creates the schema,
each later version changes it, and each step is an SQL statement or a function of the
open connection (for steps that need parameters or data, such as a random secret).
At start the store calls :func:`migrate` inside one write transaction: every migration
above the database's version runs, in order, and the version is recorded, all in that
transaction, so a crash or a failing step leaves the database at its old version.

The rules that keep several servers on one database safe:

* A database *newer* than the code (a version this code has no migration for) is refused
  with the store's own error: old code must not write to a schema it does not know.
* A released migration is never edited; a change is a new version.
* Migrations only add (tables, nullable columns, indexes) while servers of the previous
  version may still be running against the same database; anything else needs all of
  them stopped first (docs/scale.md).

Both ``sqlite3.Connection`` and ``psycopg.Connection`` have ``execute(sql).fetchone()``,
which is all the runner needs; it sends no parameters, so placeholder styles never matter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...


class Connection(Protocol):
    """What the runner needs of a DB-API connection (sqlite3 and psycopg 3 both qualify)."""

    def execute(self, sql: Any, /) -> Any: ...


#: One step of a migration: an SQL statement, or a function of the connection.
Step = str | Callable[[Any], None]
Migrations = Mapping[int, Sequence[Step]]


def latest_version(migrations: Migrations) -> int:
    """The version a database has once every migration has run; the versions must be 1..N."""
    versions = sorted(migrations)
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, ... without gaps, got {versions}")
    return versions[-1] if versions else 0


def current_version(conn: Connection, table: str = "schema_version") -> int:
    """The version recorded in ``table`` (0 for a database without one).

    The table is created when missing, so call this inside the write transaction that
    migrates."""
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"version table {table!r}: lower-case letters, digits and _")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
    row = conn.execute(f"SELECT version FROM {table}").fetchone()
    return 0 if row is None else int(row[0])


class SchemaTooNewError(Exception):
    """A database written by a newer faceaudit. ``migrate`` raises the store's own error type
    with this as its ``__cause__``, so one check (``is_schema_too_new``) serves every store."""


def is_schema_too_new(error: BaseException) -> bool:
    return isinstance(error, SchemaTooNewError) or isinstance(error.__cause__, SchemaTooNewError)


def migrate(conn: Connection, migrations: Migrations, *, describe: str,
            error: Callable[[str], Exception], table: str = "schema_version") -> int:
    """Bring the database on ``conn`` up to the latest version; returns that version.

    Call it inside a write transaction the caller commits. ``describe`` names the
    database in messages; ``error(message)`` makes the exception raised for a database
    newer than the code.
    """
    latest = latest_version(migrations)
    version = current_version(conn, table)
    if version > latest:
        message = (f"{describe} has schema version {version}; this faceaudit understands up to "
                   f"{latest}. Upgrade faceaudit (or point it at another database)")
        raise error(message) from SchemaTooNewError(message)
    if version == latest:
        return version
    for number in range(version + 1, latest + 1):
        for step in migrations[number]:
            if callable(step):
                step(conn)
            else:
                conn.execute(step)
    if version == 0:
        conn.execute(f"INSERT INTO {table} (version) VALUES ({int(latest)})")
    else:
        conn.execute(f"UPDATE {table} SET version = {int(latest)}")
    return latest
