"""One database seam for the accountability stores: a SQLite file, or the PostgreSQL database of the faces.

The tag/moratorium/budget state, the review store and the search log each keep a few
tables. With the embedded backend they are SQLite files in the data directory; with
``--database postgresql://...`` they are tables in that database, so every server on it
shares them. A store opens one of the two classes here (:func:`open_database`) and writes
its statements once, in the SQL both accept, with SQLite's ``?`` placeholders:

* ``write()`` -- one write transaction, serialised with every other writer of the same
  store, in every process and on every host: SQLite's ``BEGIN IMMEDIATE`` (the file's
  write lock), PostgreSQL's transaction-scoped advisory lock on the store's ``lock`` key
  (READ COMMITTED: each statement after the lock sees every earlier writer's commit, so a
  count read and then spent cannot be overspent by another server). Anything raised
  inside rolls it back; leaving the block commits (durable: WAL with ``synchronous=FULL``,
  or PostgreSQL's ``synchronous_commit``).
* ``read()`` -- a connection for single-statement reads; ``snapshot()`` -- a read-only
  transaction whose statements all see one state.
* ``rows(sql, parameters)`` -- the rows of one read statement.
* ``migrate(...)`` -- faceaudit.storage.migrations inside a write transaction, with the
  store's migrations for this database's ``flavour`` ("sqlite" or "postgres"): the DDL
  differs (types, identity columns; :func:`postgres_ddl` writes one from the other), the
  statements do not. ``open_database(..., schema=StoreSchema(...))`` applies the store's
  set for the flavour it opened, so a store never branches on it (``StoreSchema.migrate(db)``
  does the same for a database a store opened itself, as the key stores do: their class names
  the flavour).

:class:`SqlStore` is the base of the stores: their ``_db``, ``close()`` (once) and ``with``.

PostgreSQL connections come from a small psycopg_pool pool per store; the placeholders
are turned into psycopg's ``%s`` (no statement of these stores contains a literal ``%``).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from faceaudit.storage.migrations import Migrations, migrate
from faceaudit.storage.sqlite_connections import ThreadConnections
from faceaudit.storage.sqlite_transactions import immediate_transaction

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Database",
    "PostgresDatabase",
    "SQLiteDatabase",
    "SqlStore",
    "StoreSchema",
    "is_postgres_url",
    "open_database",
    "postgres_ddl",
]

SQLITE, POSTGRES = "sqlite", "postgres"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: str | None) -> bool:
    return bool(database) and str(database).startswith(_POSTGRES_SCHEMES)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the stores call on a connection (sqlite3.Connection has exactly this)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Database(Protocol):
    flavour: str
    describe: str  # names the database in messages (a path, or "PostgreSQL (...)")
    #: what a failed statement raises (sqlite3.Error, psycopg.Error): the stores turn it into their own error
    errors: tuple[type[BaseException], ...]

    def write(self) -> AbstractContextManager[Any]: ...

    def read(self) -> AbstractContextManager[Any]: ...

    def snapshot(self) -> AbstractContextManager[Any]: ...

    def rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]: ...

    def migrate(self, migrations: Migrations, *, error: Callable[[str], Exception], table: str) -> int: ...

    def close(self) -> None: ...


_DB = TypeVar("_DB", bound=Database)


@dataclass(frozen=True)
class StoreSchema:
    """A store's migrations for each flavour, and the table each records its version in."""

    sqlite: Migrations
    postgres: Migrations
    #: PostgreSQL: one database holds every store's tables, so each store has a version table of its own
    postgres_version_table: str
    sqlite_version_table: str = "schema_version"  # a SQLite file is the store's alone

    def migrate(self, db: _DB, *, error: Callable[[str], Exception]) -> _DB:
        """``db`` migrated to its flavour's latest version (``error``: what a database newer than the
        code raises), or closed again and the failure raised."""
        try:
            if db.flavour == POSTGRES:
                db.migrate(self.postgres, error=error, table=self.postgres_version_table)
            else:
                db.migrate(self.sqlite, error=error, table=self.sqlite_version_table)
        except BaseException:
            db.close()
            raise
        return db


def postgres_ddl(statement: str) -> str:
    """A SQLite CREATE statement in PostgreSQL's types: 64-bit integers (an identity column for
    SQLite's ``INTEGER PRIMARY KEY``), float8, bytea. The stores write their schema once, for SQLite."""
    return (statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT,", "INTEGER PRIMARY KEY,")
            .replace("INTEGER PRIMARY KEY,", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,")
            .replace("INTEGER", "BIGINT").replace("REAL", "DOUBLE PRECISION").replace("BLOB", "BYTEA"))


def private_file(path: Path) -> None:
    """Create ``path`` 0600 (before SQLite sees it) in a 0700 directory; refuse one others can read."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path} is accessible to other users (mode {mode:04o}); run 'chmod 600 {path}'")


class SQLiteDatabase:
    """A SQLite file: one connection per thread, WAL, ``synchronous=FULL``."""

    flavour = SQLITE
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float,
                 unavailable: Callable[[str], Exception], pragmas: Iterable[str] = ()):
        self.path = Path(path)
        self.describe = str(self.path)
        private_file(self.path)
        self._connections = ThreadConnections(self.path, busy_timeout=busy_timeout, unavailable=unavailable,
                                              pragmas=pragmas)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with immediate_transaction(self._connections.get()) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        yield self._connections.get()

    def rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return self._connections.get().execute(sql, parameters).fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        conn = self._connections.get()
        conn.execute("BEGIN")  # deferred: a read transaction, one WAL snapshot
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def migrate(self, migrations: Migrations, *, error: Callable[[str], Exception],
                table: str = "schema_version") -> int:
        with self.write() as conn:
            return migrate(conn, migrations, describe=self.describe, error=error, table=table)

    def close(self) -> None:
        self._connections.close()


class _Rows:
    def __init__(self, rows: list[Any]):
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _PostgresConnection:
    """A psycopg connection that takes SQLite's ``?`` placeholders (and gives bytea as bytes)."""

    def __init__(self, conn: Any):
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> _Rows:
        if parameters is None or len(parameters) == 0:
            cursor = self._conn.execute(sql)
        else:
            cursor = self._conn.execute(sql.replace("?", "%s"), tuple(parameters))
        # rownumber is None for a statement without rows; cheaper than .description, which builds
        # a Column a column each time (~20 us for a key's 10: a lookup per request pays it)
        return _Rows(cursor.fetchall() if cursor.rownumber is not None else [])

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(p) for p in parameters]
        if rows:
            with self._conn.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresDatabase:
    """A store's tables in the PostgreSQL database at ``url`` (its search_path decides the schema)."""

    flavour = POSTGRES
    errors: tuple[type[BaseException], ...]

    def __init__(self, url: str, *, lock: int, name: str, unavailable: Callable[[str], Exception],
                 pool_size: int = 4, connect_timeout: float = 10.0):
        import psycopg
        from psycopg_pool import ConnectionPool

        self.errors = (psycopg.Error,)
        self.describe = f"the {name} tables of the PostgreSQL database"
        self._lock = int(lock)
        self._pool = ConnectionPool(url, min_size=1, max_size=max(1, pool_size), kwargs={"autocommit": True},
                                    timeout=connect_timeout, open=False, name=f"faceaudit-{name}")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as error:  # psycopg_pool.PoolTimeout: the server is not there
            self._pool.close()
            raise unavailable(f"could not connect to PostgreSQL for the {name} tables: {error}") from None

    @contextmanager
    def write(self) -> Iterator[_PostgresConnection]:
        with self._pool.connection() as conn:
            # BEGIN and the lock in one round trip: a simple query may hold two statements (the key is
            # this store's integer, not a parameter); the server runs them in order, so every statement
            # of the block starts after the lock is held and sees every earlier writer's commit.
            conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({self._lock:d})")
            try:
                yield _PostgresConnection(conn)
            except BaseException:
                with suppress(*self.errors):  # a broken connection: the pool discards it (the server rolls back)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[_PostgresConnection]:
        with self._pool.connection() as conn:
            yield _PostgresConnection(conn)

    def rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._pool.connection() as conn:  # read()'s connection, one generator fewer per lookup
            return _PostgresConnection(conn).execute(sql, parameters).fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[_PostgresConnection]:
        with self._pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield _PostgresConnection(conn)
            finally:
                conn.execute("COMMIT")

    def migrate(self, migrations: Migrations, *, error: Callable[[str], Exception],
                table: str = "schema_version") -> int:
        with self.write() as conn:  # under the store's lock: two servers starting at once migrate once
            return migrate(conn, migrations, describe=self.describe, error=error, table=table)

    def close(self) -> None:
        self._pool.close()


def open_database(database: str | None, sqlite_path: str | os.PathLike, *, lock: int, name: str,
                  unavailable: Callable[[str], Exception], busy_timeout: float = 10.0,
                  pragmas: Iterable[str] = (), pool_size: int = 4,
                  schema: StoreSchema | None = None) -> SQLiteDatabase | PostgresDatabase:
    """PostgresDatabase when ``database`` is a postgresql:// URL, else the SQLite file ``sqlite_path``.

    ``schema``: migrated to its latest version for the flavour opened (a database newer than the
    code raises ``unavailable``); a database that fails to migrate is closed again."""
    db: SQLiteDatabase | PostgresDatabase
    if is_postgres_url(database):
        assert database is not None
        db = PostgresDatabase(database, lock=lock, name=name, unavailable=unavailable, pool_size=pool_size)
    else:
        db = SQLiteDatabase(sqlite_path, busy_timeout=busy_timeout, unavailable=unavailable, pragmas=pragmas)
    return db if schema is None else schema.migrate(db, error=unavailable)


class SqlStore:
    """The base of a store kept on one :class:`Database` (``self._db``, from :func:`open_database`):
    ``close()`` closes it once, and the store is a context manager that closes it."""

    _db: SQLiteDatabase | PostgresDatabase

    def __init__(self, db: SQLiteDatabase | PostgresDatabase):
        self._db = db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
