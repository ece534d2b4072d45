"""PostgresKeyStore: the access keys in PostgreSQL, in the same database as the faces.

When ``faceaudit serve --database postgresql://...`` keeps the faces in PostgreSQL, the keys
live there too (table ``access_keys``, versioned by faceaudit.storage.migrations in its own
``access_schema_version``): every server on that database sees a new, revoked or rotated
key on its next request, as servers sharing a data folder do with SQLiteKeyStore.

It is SQLiteKeyStore on another database: faceaudit.storage.sql_database's PostgresDatabase
(a small connection pool; SQLite's ``?`` placeholders turned into psycopg's ``%s``), whose
write transactions first take the keys' advisory lock, which serialises key changes as
SQLite's write lock does (a name or id is checked, the next ``seq`` read, then written).
Secrets are kept as SigV4 requires, in clear (docs/access.md): the database's own access
control is what protects them.
"""

from __future__ import annotations

import re

from faceaudit.access.keys import KeyStoreError, KeyStoreUnavailable
from faceaudit.access.sqlite import KEYS_LOCK, POSTGRES_MIGRATIONS, POSTGRES_VERSION_TABLE, SQLiteKeyStore
from faceaudit.storage.migrations import latest_version
from faceaudit.storage.sql_database import PostgresDatabase

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "VERSION_TABLE", "PostgresKeyStore"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MIGRATIONS = POSTGRES_MIGRATIONS
SCHEMA_VERSION = latest_version(MIGRATIONS)
VERSION_TABLE = POSTGRES_VERSION_TABLE


class PostgresKeyStore(SQLiteKeyStore):
    """KeyStore (faceaudit.access.keys) in the PostgreSQL database at ``dsn``; ``schema``: in that
    schema (created if missing; search_path), else where the connection's search_path says."""

    def __init__(self, dsn: str, *, schema: str | None = None, pool_size: int = 2,
                 connect_timeout: float = 10.0):
        if schema is not None:
            if not _SCHEMA_NAME.fullmatch(schema):
                raise KeyStoreError(f"schema {schema!r}: lower-case letters, digits and _")
            from psycopg.conninfo import make_conninfo

            dsn = make_conninfo(dsn, options=f"-c search_path={schema},public")
        db = PostgresDatabase(dsn, lock=KEYS_LOCK, name="key", unavailable=KeyStoreUnavailable,
                              pool_size=pool_size, connect_timeout=connect_timeout)
        self._open(db, first=None if schema is None else f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
