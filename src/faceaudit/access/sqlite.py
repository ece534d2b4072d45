"""SQLiteKeyStore: access keys in ``DATA_DIR/access.db``, beside the faces' database.

The same approach as faceaudit.storage.embedded: WAL mode, ``synchronous=FULL`` (a
revocation or a new key, once acknowledged, survives a power cut), every change one
``BEGIN IMMEDIATE`` transaction, one connection per thread, several processes at once:
faceaudit.storage.sql_database's SQLiteDatabase, the seam of the accountability stores.
A file of its own rather than tables in faceaudit.db: its schema moves with the
accountability work (keys now, the search log next) and not with the faces', and a
key lookup shares no lock with face writes.

The file is created with mode 0600 (SQLite gives -wal and -shm the same mode) in a
0700 directory, and refused when group or others may read it: it holds secrets in
clear, as SigV4 requires (docs/access.md).

Every method is written once, in the SQL SQLite and PostgreSQL both accept:
PostgresKeyStore (faceaudit.access.postgres) is this class on a PostgresDatabase. A clash
(a taken key id, an active name) is looked for before the INSERT, inside the write
transaction, which holds the store's write lock: a failed statement would abort a
PostgreSQL transaction, so the unique indexes are the last guard, not the explanation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faceaudit.access.keys import (
    INITIAL_KEY_NAME,
    REVOKED,
    ROTATED,
    AccessKey,
    IssuedKey,
    KeyStoreError,
    KeyStoreUnavailable,
    new_key_pair,
    validate_new_key,
)
from faceaudit.access.roles import ADMIN
from faceaudit.storage.migrations import Step, latest_version
from faceaudit.storage.sql_database import (
    Connection,
    PostgresDatabase,
    SQLiteDatabase,
    SqlStore,
    StoreSchema,
    postgres_ddl,
)

DB_FILENAME = "access.db"
DEFAULT_BUSY_TIMEOUT_S = 10.0
# A lookup runs on the server's event loop: never wait long for a lock there. Readers
# in WAL mode do not wait for writers; this only bounds rare recovery after a crash.
LOOKUP_BUSY_TIMEOUT_S = 1.0

_SCHEMA = [
    """CREATE TABLE access_keys (
        access_key_id  TEXT    PRIMARY KEY,
        secret         TEXT    NOT NULL,
        name           TEXT    NOT NULL,
        role           TEXT    NOT NULL,
        unit           TEXT,
        origin         TEXT    NOT NULL,
        created_ms     INTEGER NOT NULL,
        revoked_ms     INTEGER,             -- NULL while the key is active
        revoked_reason TEXT,                -- 'revoked' or 'rotated'
        replaced_by    TEXT,                -- rotation: the key that took its place
        seq            INTEGER NOT NULL UNIQUE  -- creation order
    )""",
    # One active key per name; revoked ones keep theirs, so the log can still name them.
    "CREATE UNIQUE INDEX access_keys_active_name ON access_keys (name) WHERE revoked_ms IS NULL",
]
# faceaudit.storage.migrations, per database flavour: version 1 creates the schema; a change is a
# new version. PostgreSQL: the same table in its types (BIGINT for INTEGER), versioned in a table of
# its own, beside the faces' schema_version.
MIGRATIONS: dict[int, list[Step]] = {1: list(_SCHEMA)}
POSTGRES_MIGRATIONS: dict[int, list[Step]] = {1: [postgres_ddl(statement) for statement in _SCHEMA]}
POSTGRES_VERSION_TABLE = "access_schema_version"
SCHEMA_VERSION = latest_version(MIGRATIONS)
_STORE_SCHEMA = StoreSchema(MIGRATIONS, POSTGRES_MIGRATIONS, POSTGRES_VERSION_TABLE)
KEYS_LOCK = 0x6B657973  # "keys": PostgreSQL's advisory lock of key changes
_COLUMNS = ("access_key_id, secret, name, role, unit, origin, created_ms, revoked_ms, "
            "revoked_reason, replaced_by")
_BY_ID = f"SELECT {_COLUMNS} FROM access_keys WHERE access_key_id = ?"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _issued(row: tuple) -> IssuedKey:
    created = _time(row[6])
    assert created is not None
    key = AccessKey(access_key_id=row[0], name=row[2], role=row[3], unit=row[4], origin=row[5],
                    created=created, revoked=_time(row[7]), revoked_reason=row[8], replaced_by=row[9])
    return IssuedKey(key, row[1])


def _name_is_active(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM access_keys WHERE name = ? AND revoked_ms IS NULL",
                        (name,)).fetchone() is not None


class SQLiteKeyStore(SqlStore):
    """KeyStore (faceaudit.access.keys) on SQLite in ``data_dir/access.db``."""

    def __init__(self, data_dir: str | os.PathLike, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        try:  # created 0600 in a 0700 directory; an existing file others can read is refused
            db = SQLiteDatabase(self.path, busy_timeout=busy_timeout, unavailable=KeyStoreUnavailable)
        except PermissionError as error:
            raise KeyStoreError(f"{error}, and rotate every key ('faceaudit keys rotate'): the secrets "
                                "in it may have leaked") from None
        self._open(db)

    def _open(self, db: SQLiteDatabase | PostgresDatabase, *, first: str | None = None) -> None:
        """Keep ``db``, migrated to this code's schema (after ``first``: one statement under the store's
        write lock); closed again, and the store's own error raised, when that fails."""
        try:
            if first is not None:
                with db.write() as conn:
                    conn.execute(first)
            # a database newer than the code is KeyStoreError: the store is there, this faceaudit is too old
            super().__init__(_STORE_SCHEMA.migrate(db, error=KeyStoreError))
        except BaseException as error:
            db.close()  # closing twice (after a failed migration) is harmless
            if isinstance(error, db.errors):
                raise KeyStoreUnavailable(f"{db.describe} could not be opened: {error}") from error
            raise

    # --- transactions: the database's errors become the store's own

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._db.write() as conn:
                yield conn
        except self._db.errors as error:  # rolled back already
            raise KeyStoreUnavailable(f"{self._db.describe} could not be written: {error}") from error

    def _rows(self, sql: str, parameters: tuple = ()) -> list[Any]:
        try:
            return self._db.rows(sql, parameters)
        except self._db.errors as error:
            raise KeyStoreUnavailable(f"{self._db.describe} could not be read: {error}") from error

    # --- reads

    def lookup(self, access_key_id: str) -> IssuedKey | None:
        rows = self._rows(_BY_ID, (access_key_id,))
        return _issued(rows[0]) if rows else None

    def keys(self, *, include_revoked: bool = False) -> list[AccessKey]:
        where = "" if include_revoked else "WHERE revoked_ms IS NULL"
        return [_issued(row).key for row in self._rows(f"SELECT {_COLUMNS} FROM access_keys {where} ORDER BY seq")]

    def has_keys(self) -> bool:
        return bool(self._rows("SELECT 1 FROM access_keys LIMIT 1"))

    # --- changes (each inside ``_write``: under the store's write lock, so a check holds until commit)

    @staticmethod
    def _insert(conn: Connection, access_key_id: str, secret: str, name: str, role: str,
                unit: str | None, origin: str, *, created_ms: int | None = None, revoked_ms: int | None = None,
                revoked_reason: str | None = None, replaced_by: str | None = None) -> IssuedKey:
        if conn.execute("SELECT 1 FROM access_keys WHERE access_key_id = ?", (access_key_id,)).fetchone():
            # 1 in 36**20: a fresh id that already exists
            raise KeyStoreError(f"access key id {access_key_id} exists; try again")
        if revoked_ms is None and _name_is_active(conn, name):
            raise KeyStoreError(f"an active key is already named {name!r} (revoke or rotate it, "
                                "or choose another name)")
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM access_keys").fetchone()[0]
        conn.execute(
            "INSERT INTO access_keys (access_key_id, secret, name, role, unit, origin, created_ms, seq, "
            "revoked_ms, revoked_reason, replaced_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (access_key_id, secret, name, role, unit, origin, _now_ms() if created_ms is None else created_ms,
             seq, revoked_ms, revoked_reason, replaced_by))
        return _issued(conn.execute(_BY_ID, (access_key_id,)).fetchone())

    def create(self, name: str, role: str, unit: str | None = None) -> IssuedKey:
        validate_new_key(name, role, unit)
        access, secret = new_key_pair()
        with self._write() as conn:
            return self._insert(conn, access, secret, name, role, unit, "created")

    def adopt(self, access_key_id: str, secret_access_key: str, *, origin: str,
              name: str = INITIAL_KEY_NAME, role: str = ADMIN) -> tuple[AccessKey, bool]:
        validate_new_key(name, role, None)
        with self._write() as conn:  # one transaction: two servers starting at once adopt it once
            row = conn.execute(_BY_ID, (access_key_id,)).fetchone()
            if row is not None:
                known = _issued(row)
                if known.secret_access_key != secret_access_key:
                    raise KeyStoreError(
                        f"access key id {access_key_id} (from {origin}) is stored as key "
                        f"{known.key.name!r} with another secret; use the stored secret, or "
                        f"'faceaudit keys rotate {known.key.name}' and use the new pair")
                return known.key, False
            taken = {r[0] for r in conn.execute(
                "SELECT name FROM access_keys WHERE revoked_ms IS NULL AND (name = ? OR name LIKE ?)",
                (name, name + "-%"))}
            chosen = name
            for n in range(2, len(taken) + 3):
                if chosen not in taken:
                    break
                chosen = f"{name}-{n}"
            return self._insert(conn, access_key_id, secret_access_key, chosen, role, None, origin).key, True

    @staticmethod
    def _active(conn: Connection, name_or_id: str) -> IssuedKey:
        """The key by access key id (checked first), else the active key of that name."""
        row = conn.execute(_BY_ID, (name_or_id,)).fetchone()
        if row is None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM access_keys WHERE name = ? AND revoked_ms IS NULL",
                               (name_or_id,)).fetchone()
        if row is None:
            raise KeyStoreError(f"no active key has the name or access key id {name_or_id!r} "
                                "('faceaudit keys list' shows them)")
        issued = _issued(row)
        if not issued.key.active:
            raise KeyStoreError(f"key {issued.key.name!r} ({issued.key.access_key_id}) was already "
                                f"{issued.key.revoked_reason}")
        return issued

    def revoke(self, name_or_id: str, *, force: bool = False) -> AccessKey:
        with self._write() as conn:
            key = self._active(conn, name_or_id).key
            if key.role == ADMIN and not force:
                admins = conn.execute("SELECT COUNT(*) FROM access_keys WHERE role = ? AND revoked_ms IS NULL",
                                      (ADMIN,)).fetchone()[0]
                if admins <= 1:
                    raise KeyStoreError(
                        f"{key.name!r} is the last active admin key: without one nobody can create or "
                        "delete collections. Create another admin key first "
                        "('faceaudit keys create --role admin'), or pass --force")
            conn.execute("UPDATE access_keys SET revoked_ms = ?, revoked_reason = ? WHERE access_key_id = ?",
                         (_now_ms(), REVOKED, key.access_key_id))
            return _issued(conn.execute(_BY_ID, (key.access_key_id,)).fetchone()).key

    def restore(self, issued: IssuedKey) -> bool:
        """Store a key exactly as another store holds it (``faceaudit storage migrate``): its id,
        secret, name, role, unit, origin, creation and revocation. False (nothing changed) when
        this store already has the key with the same secret; KeyStoreError when it has the id with
        another secret, or an active key of that name."""
        key = issued.key
        with self._write() as conn:
            row = conn.execute("SELECT secret FROM access_keys WHERE access_key_id = ?",
                               (key.access_key_id,)).fetchone()
            if row is not None:
                if row[0] != issued.secret_access_key:
                    raise KeyStoreError(f"access key id {key.access_key_id} is here with another secret")
                return False
            if key.active and _name_is_active(conn, key.name):
                raise KeyStoreError(f"an active key is already named {key.name!r} here")
            self._insert(conn, key.access_key_id, issued.secret_access_key, key.name, key.role, key.unit,
                         key.origin, created_ms=_ms(key.created), revoked_ms=_ms(key.revoked) if key.revoked else None,
                         revoked_reason=key.revoked_reason, replaced_by=key.replaced_by)
            return True

    def rotate(self, name_or_id: str) -> IssuedKey:
        access, secret = new_key_pair()
        with self._write() as conn:
            old = self._active(conn, name_or_id).key
            # Revoked first: the name's unique index admits one active key at a time.
            conn.execute("UPDATE access_keys SET revoked_ms = ?, revoked_reason = ?, replaced_by = ? "
                         "WHERE access_key_id = ?", (_now_ms(), ROTATED, access, old.access_key_id))
            return self._insert(conn, access, secret, old.name, old.role, old.unit, ROTATED)
