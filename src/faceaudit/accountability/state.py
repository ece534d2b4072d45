"""What the guard remembers between requests: ``DATA_DIR/accountability.db`` (SQLite), or tables in PostgreSQL.

* collection tags (the ``faceaudit:policy`` tag among them);
* moratoria: who suspended which searches, when and why, and when they were lifted;
* search counts per key for the daily budgets and the real-time window.

Shared by every server process and CLI command on the data directory, as the key store
is (faceaudit.access.sqlite): WAL mode, ``synchronous=FULL`` (an acknowledged moratorium
survives a power cut), every change one ``BEGIN IMMEDIATE`` transaction (so a budget is
checked and spent atomically across processes), one connection per thread. The file is
created with mode 0600 in a 0700 directory.

With ``database=postgresql://...`` (the server's ``--database``) the same tables live in
that database instead (faceaudit.storage.sql_database), so every server on it shares the
tags, the moratoria and the budgets: each change is one transaction under this store's
advisory lock, which serialises writers across hosts as SQLite's write lock does across
processes (a budget is still checked and spent in one transaction).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from faceaudit.accountability.context import utc_time
from faceaudit.storage.migrations import Step, latest_version
from faceaudit.storage.sql_database import Connection, SqlStore, StoreSchema, open_database, postgres_ddl

__all__ = ["DB_FILENAME", "SCOPES", "AccountabilityState", "Admission", "Moratorium", "StateError"]

DB_FILENAME = "accountability.db"
SCOPES = ("policy", "collection", "key")
BUSY_TIMEOUT_S = 10.0
KEEP_USAGE = timedelta(days=2)  # search counts older than this count for nothing

_SCHEMA = [
    """CREATE TABLE collection_tags (
        collection_id TEXT    NOT NULL,
        tag_key       TEXT    NOT NULL,
        tag_value     TEXT    NOT NULL,
        version       INTEGER NOT NULL,   -- from counters 'tags': never reused
        PRIMARY KEY (collection_id, tag_key)
    )""",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    """CREATE TABLE moratoria (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        scope        TEXT    NOT NULL CHECK (scope IN ('policy', 'collection', 'key')),
        target       TEXT    NOT NULL,
        reason       TEXT    NOT NULL,
        set_by       TEXT    NOT NULL,
        set_at_ms    INTEGER NOT NULL,
        lifted_at_ms INTEGER,             -- NULL while in force
        lifted_by    TEXT
    )""",
    "CREATE INDEX moratoria_active ON moratoria (scope, target) WHERE lifted_at_ms IS NULL",
    """CREATE TABLE search_usage (
        key_name TEXT    NOT NULL,
        policy   TEXT    NOT NULL,
        at_ms    INTEGER NOT NULL
    )""",
    "CREATE INDEX search_usage_by_key ON search_usage (key_name, policy, at_ms)",
]
# faceaudit.storage.migrations, per database flavour: version 1 creates the schema; a change is a new version.
# PostgreSQL: the same tables in its types (64-bit times, an identity column for the moratorium ids).
MIGRATIONS: dict[int, list[Step]] = {1: list(_SCHEMA)}
POSTGRES_MIGRATIONS: dict[int, list[Step]] = {1: [postgres_ddl(statement) for statement in _SCHEMA]}
SCHEMA_VERSION = latest_version(MIGRATIONS)
POSTGRES_VERSION_TABLE = "accountability_schema_version"
_STORE_SCHEMA = StoreSchema(MIGRATIONS, POSTGRES_MIGRATIONS, POSTGRES_VERSION_TABLE)
_STATE_LOCK = 0x61636374  # "acct": the advisory lock of every change to these tables


class StateError(Exception):
    """A change that cannot be made as asked (unknown moratorium, already lifted...)."""


@dataclass(frozen=True)
class Moratorium:
    id: int
    scope: str  # policy | collection | key
    target: str
    reason: str
    set_by: str
    set_at: datetime
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    def to_json(self) -> dict:
        return {"Id": self.id, "Scope": self.scope, "Target": self.target, "Reason": self.reason,
                "SetBy": self.set_by, "SetAt": utc_time(self.set_at),
                "LiftedAt": None if self.lifted_at is None else utc_time(self.lifted_at),
                "LiftedBy": self.lifted_by}


@dataclass(frozen=True)
class Admission:
    """The answer to one search asking for budget: admitted (and counted) or refused, and why."""

    admitted: bool
    refused_by: str | None  # "budget" | "realtime" | None
    today: int  # searches counted today (UTC), this one included when admitted
    in_window: int  # searches counted in the real-time window, likewise
    retry_after_s: float | None = None  # realtime: when the oldest search in the window leaves it


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _moratorium(row: tuple) -> Moratorium:
    set_at = _time(row[5])
    assert set_at is not None
    return Moratorium(row[0], row[1], row[2], row[3], row[4], set_at, _time(row[6]), row[7])


_M_COLUMNS = "id, scope, target, reason, set_by, set_at_ms, lifted_at_ms, lifted_by"


class AccountabilityState(SqlStore):
    """Tags, moratoria and search counts in ``data_dir/accountability.db``, or in the PostgreSQL
    database ``database`` names (a postgresql:// URL; None or "embedded": the SQLite file)."""

    def __init__(self, data_dir: str | os.PathLike, *, busy_timeout: float = BUSY_TIMEOUT_S,
                 database: str | None = None, pool_size: int = 4):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        # pool_size: PostgreSQL connections (a search reads moratoria and spends budget here)
        super().__init__(open_database(database, self.path, lock=_STATE_LOCK, name="accountability",
                                       unavailable=StateError, busy_timeout=busy_timeout, pool_size=pool_size,
                                       schema=_STORE_SCHEMA))

    # --- tags

    def tags(self, collection_id: str) -> dict[str, str]:
        return dict(self._db.rows(
            "SELECT tag_key, tag_value FROM collection_tags WHERE collection_id = ? ORDER BY tag_key",
            (collection_id,)))

    def tag(self, collection_id: str, key: str) -> str | None:
        rows = self._db.rows("SELECT tag_value FROM collection_tags WHERE collection_id = ? AND tag_key = ?",
                             (collection_id, key))
        return rows[0][0] if rows else None

    def tagged(self, key: str) -> dict[str, str]:
        """Collection -> value of tag ``key``, for every collection that has it."""
        return dict(self._db.rows(
            "SELECT collection_id, tag_value FROM collection_tags WHERE tag_key = ? ORDER BY collection_id",
            (key,)))

    def tags_version(self, collection_id: str) -> int:
        """The newest version among the collection's tags (0: none); see :meth:`forget_collection`."""
        rows = self._db.rows("SELECT MAX(version) FROM collection_tags WHERE collection_id = ?", (collection_id,))
        return int(rows[0][0] or 0)

    @staticmethod
    def _next_version(conn: Connection) -> int:
        conn.execute("INSERT INTO counters (name, value) VALUES ('tags', 1) "
                     "ON CONFLICT (name) DO UPDATE SET value = counters.value + 1")
        return int(conn.execute("SELECT value FROM counters WHERE name = 'tags'").fetchone()[0])

    def set_tags(self, collection_id: str, tags: Mapping[str, str], *, replace: bool = False,
                 limit: int | None = None) -> dict[str, str]:
        """Add (or with ``replace``, set exactly) the collection's tags; returns the tags before.

        ``limit``: StateError if the collection would then hold more tags than this."""
        with self._db.write() as conn:
            before = dict(conn.execute("SELECT tag_key, tag_value FROM collection_tags "
                                       "WHERE collection_id = ?", (collection_id,)).fetchall())
            after = dict(tags) if replace else {**before, **tags}
            if limit is not None and len(after) > limit:
                raise StateError(f"a collection holds at most {limit} tags; this would make {len(after)}")
            if replace:
                conn.execute("DELETE FROM collection_tags WHERE collection_id = ?", (collection_id,))
            if tags:
                version = self._next_version(conn)
                conn.executemany(
                    "INSERT INTO collection_tags (collection_id, tag_key, tag_value, version) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (collection_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value, "
                    "version = excluded.version",
                    [(collection_id, k, v, version) for k, v in tags.items()])
            return before

    def restore_tags(self, collection_id: str, previous: Mapping[str, str], *, if_current: Mapping[str, str]) -> bool:
        """Put ``previous`` back, only if the tags are still ``if_current`` (undoing a change that
        did not take effect, without undoing someone else's since). True if restored."""
        with self._db.write() as conn:
            now = dict(conn.execute("SELECT tag_key, tag_value FROM collection_tags "
                                    "WHERE collection_id = ?", (collection_id,)).fetchall())
            if now != dict(if_current):
                return False
            conn.execute("DELETE FROM collection_tags WHERE collection_id = ?", (collection_id,))
            if previous:
                version = self._next_version(conn)
                conn.executemany("INSERT INTO collection_tags (collection_id, tag_key, tag_value, version) "
                                 "VALUES (?, ?, ?, ?)", [(collection_id, k, v, version) for k, v in previous.items()])
            return True

    def remove_tags(self, collection_id: str, keys: list[str]) -> dict[str, str]:
        """Remove these tag keys (absent ones are ignored); returns the tags before."""
        with self._db.write() as conn:
            before = dict(conn.execute("SELECT tag_key, tag_value FROM collection_tags "
                                       "WHERE collection_id = ?", (collection_id,)).fetchall())
            conn.executemany("DELETE FROM collection_tags WHERE collection_id = ? AND tag_key = ?",
                             [(collection_id, k) for k in keys])
            return before

    def forget_collection(self, collection_id: str, *, up_to_version: int | None = None) -> None:
        """Remove a deleted collection's tags; with ``up_to_version`` only those written no later
        (tags of a collection of the same name created meanwhile stay)."""
        with self._db.write() as conn:
            if up_to_version is None:
                conn.execute("DELETE FROM collection_tags WHERE collection_id = ?", (collection_id,))
            else:
                conn.execute("DELETE FROM collection_tags WHERE collection_id = ? AND version <= ?",
                             (collection_id, up_to_version))

    # --- moratoria

    def set_moratorium(self, scope: str, target: str, reason: str, set_by: str,
                       at: datetime | None = None) -> Moratorium:
        if scope not in SCOPES:
            raise StateError(f"moratorium scope {scope!r}: one of {', '.join(SCOPES)}")
        if not target or not reason.strip():
            raise StateError("a moratorium needs a target and a reason")
        at_ms = _ms(at or datetime.now(UTC))
        with self._db.write() as conn:
            row = conn.execute(
                "INSERT INTO moratoria (scope, target, reason, set_by, set_at_ms) VALUES (?, ?, ?, ?, ?) "
                f"RETURNING {_M_COLUMNS}", (scope, target, reason.strip(), set_by, at_ms)).fetchone()
            return _moratorium(row)

    def lift_moratorium(self, moratorium_id: int, lifted_by: str, at: datetime | None = None) -> Moratorium:
        with self._db.write() as conn:
            row = conn.execute(f"SELECT {_M_COLUMNS} FROM moratoria WHERE id = ?", (moratorium_id,)).fetchone()
            if row is None:
                raise StateError(f"no moratorium has id {moratorium_id} ('faceaudit moratorium list' shows them)")
            if row[6] is not None:
                lifted = _moratorium(row)
                assert lifted.lifted_at is not None
                raise StateError(f"moratorium {moratorium_id} was already lifted at {utc_time(lifted.lifted_at)}"
                                 f" by {lifted.lifted_by}")
            conn.execute("UPDATE moratoria SET lifted_at_ms = ?, lifted_by = ? WHERE id = ?",
                         (_ms(at or datetime.now(UTC)), lifted_by, moratorium_id))
            return _moratorium(conn.execute(f"SELECT {_M_COLUMNS} FROM moratoria WHERE id = ?",
                                            (moratorium_id,)).fetchone())

    def undo_moratorium_change(self, moratorium: Moratorium) -> None:
        """Take back a set (delete it) or a lift (in force again) that could not be logged."""
        with self._db.write() as conn:
            if moratorium.active:
                conn.execute("DELETE FROM moratoria WHERE id = ?", (moratorium.id,))
            else:
                conn.execute("UPDATE moratoria SET lifted_at_ms = NULL, lifted_by = NULL WHERE id = ?",
                             (moratorium.id,))

    def moratoria(self, *, active_only: bool = False) -> list[Moratorium]:
        where = "WHERE lifted_at_ms IS NULL" if active_only else ""
        rows = self._db.rows(f"SELECT {_M_COLUMNS} FROM moratoria {where} ORDER BY id")
        return [_moratorium(r) for r in rows]

    def moratoria_on(self, *, policy: str | None, collection: str | None, key: str | None) -> list[Moratorium]:
        """Moratoria in force on any of these targets, oldest first (one indexed read)."""
        wanted = [(s, t) for s, t in (("policy", policy), ("collection", collection), ("key", key)) if t]
        if not wanted:
            return []
        clause = " OR ".join("(scope = ? AND target = ?)" for _ in wanted)
        rows = self._db.rows(
            f"SELECT {_M_COLUMNS} FROM moratoria WHERE lifted_at_ms IS NULL AND ({clause}) ORDER BY id",
            [v for pair in wanted for v in pair])
        return [_moratorium(r) for r in rows]

    # --- search counts

    def admit_search(self, key_name: str, policy: str, at: datetime, *, daily_limit: int | None,
                     window_s: float, window_limit: int | None) -> Admission:
        """Check the key's daily budget and real-time window for ``policy`` and, if both allow,
        count this search -- in one transaction, so processes sharing the file cannot overspend."""
        at_ms = _ms(at)
        day_start = _ms(at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0))
        window_start = at_ms - int(window_s * 1000)
        with self._db.write() as conn:
            conn.execute("DELETE FROM search_usage WHERE key_name = ? AND policy = ? AND at_ms < ?",
                         (key_name, policy, at_ms - int(KEEP_USAGE.total_seconds() * 1000)))
            today = conn.execute("SELECT COUNT(*) FROM search_usage WHERE key_name = ? AND policy = ? "
                                 "AND at_ms >= ?", (key_name, policy, day_start)).fetchone()[0]
            recent = [r[0] for r in conn.execute(
                "SELECT at_ms FROM search_usage WHERE key_name = ? AND policy = ? AND at_ms > ? ORDER BY at_ms",
                (key_name, policy, window_start))]
            if daily_limit is not None and today >= daily_limit:
                return Admission(False, "budget", today, len(recent))
            if window_limit is not None and len(recent) >= window_limit:
                leaves = recent[len(recent) - window_limit] + int(window_s * 1000)
                return Admission(False, "realtime", today, len(recent), max(0.0, (leaves - at_ms) / 1000))
            conn.execute("INSERT INTO search_usage (key_name, policy, at_ms) VALUES (?, ?, ?)",
                         (key_name, policy, at_ms))
            return Admission(True, None, today + 1, len(recent) + 1)

