"""The accountability half of ``faceaudit storage migrate``: tags, moratoria, budgets, review, the log, retention.

With the embedded backend these live in SQLite files of the data folder; a server started
with ``--database postgresql://...`` keeps them in tables of the same names in that
database. This module copies them there, row for row, by table and column name, through the
stores' own database seam (faceaudit.storage.sql_database):

1. :func:`prepare`: the source stores are opened once (bringing an older file up to this
   code's schema, as a server starting on the folder would), each file's tables are listed
   and every one must be in :data:`CARRIED` or :data:`NOT_CARRIED` (a table this code does not
   know how to carry refuses the migration instead of being dropped); ``review.key`` is
   copied to the PostgreSQL host's data directory when that is another one; the target
   stores are opened once there, so their PostgreSQL migrations create the tables at this
   code's version; and the target's tables must hold no row (only the rows those openings
   write themselves: the review and log ids and secrets, the signing keys, the purge lease).
2. :func:`copy_into`: one PostgreSQL transaction inserts every row with its ids and sequence
   numbers (so the log's hash chain and its signed checkpoints are the same bytes), the
   source's meta rows (log id, review page secret) replacing the ones the target's opening
   made, the sealed review pictures (files of ``DATA_DIR/sealed`` in the embedded store,
   ``bytea`` rows of ``review_blobs`` in PostgreSQL, the same sealed bytes either way: they stay
   sealed with ``review.key``) for every picture a row names; then moves each identity
   counter past the highest id copied (and past SQLite's AUTOINCREMENT counter), so the next
   moratorium or review item gets a new id. A folder whose log does not list its own signing
   public key (its checkpoints name it) gets it listed, as opening the log would. Before it
   commits, the log read back from the transaction must verify
   (faceaudit.accountability.searchlog.verify) with the source's head -- it does not if a
   server still running on the folder appended meanwhile; if not, nothing is written (a row
   PostgreSQL refuses rolls it all back too).
3. :func:`check`: after the commit, the row counts of every table on both sides, the log
   verified by the log's own reader on PostgreSQL (same records, same head hash, checkpoints
   valid), every sealed picture compared, a sample opened with the target data directory's
   key, and the oldest open review item viewed blind on both sides.

The copy takes no store's own lock: the target must not be in use (it is empty) and the
folder's servers stopped (a folder written to meanwhile is caught by the log check above).

Not carried, and why: :data:`NOT_CARRIED` (schema versions, the purge lease) and
:data:`NOT_CARRIED_FILES` (console sign-in sessions).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faceaudit.access import AccessKey
from faceaudit.access.roles import REVIEWER
from faceaudit.accountability import retention, review, searchlog, state
from faceaudit.accountability.sealed import BLOB_DIRNAME, SealedBlobError, SealedBlobs, install_key
from faceaudit.accountability.sealed import KEY_FILENAME as REVIEW_KEY_FILENAME
from faceaudit.storage.sql_database import PostgresDatabase, SQLiteDatabase, open_database

__all__ = ["CARRIED", "NOT_CARRIED", "NOT_CARRIED_FILES", "AccountabilityCopy", "AccountabilityRefused",
           "Prepared", "carry", "check", "copy_into", "prepare"]

# Per file of the data folder, the tables copied, in an order that satisfies their foreign keys.
CARRIED: dict[str, tuple[str, ...]] = {
    state.DB_FILENAME: ("collection_tags", "counters", "moratoria", "search_usage"),
    review.DB_FILENAME: ("review_meta", "items", "candidates", "decisions", "verdicts", "face_crops", "retention"),
    searchlog.DB_FILENAME: ("searchlog_meta", "searchlog_records", "searchlog_checkpoints", "searchlog_keys"),
    retention.LEDGER_FILENAME: ("faces_seen",),
}
# Tables whose rows the target store writes when it opens (ids, secrets, this host's signing key):
# the source's rows replace those of the same key, others stay.
MERGED = frozenset({"review_meta", "searchlog_meta", "searchlog_keys"})
NOT_CARRIED: dict[str, str] = {
    "schema_version": "each database records its own schema version: the target's migrations write it",
    "sqlite_sequence": "SQLite's AUTOINCREMENT counters: not a table of the store; the PostgreSQL identity "
                       "counters are moved past them instead",
    "purge_lease": "the lease of whichever process purges this store; the target's migration makes its own, "
                   "and every server purges at start",
}
NOT_CARRIED_FILES: dict[str, str] = {
    "console.db": "console sign-in sessions and failed sign-ins stay per data directory (a server on "
                  "PostgreSQL keeps them there too): users sign in again",
}
PAGE = 1000  # rows read and inserted at a time
PICTURES_OPENED = 20  # review pictures decrypted with the target's key after the copy (all are compared sealed)
_MIGRATION_LOCK = 0x6D696772  # "migr": taken by the copy's transaction
# Who views an open review item on both sides after the copy (reads only: nothing is decided or logged).
_CHECKING_REVIEWER = AccessKey("FAMIGRATIONCHECK0000", "faceaudit storage migrate (check)", REVIEWER, None,
                               datetime(2026, 1, 1, tzinfo=UTC), "created")


class AccountabilityRefused(RuntimeError):
    """The accountability data cannot be carried as asked (the message says why); nothing was written."""


@dataclass
class AccountabilityCopy:
    """What was carried, and what the final check found."""

    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> source, target rows
    review_pictures: int = 0  # sealed pictures copied
    search_log: dict[str, Any] = field(default_factory=dict)  # records, head_seq, head_hash, ok, checkpoints
    identity_counters: dict[str, int] = field(default_factory=dict)  # table.column -> last id given
    review_key: str = ""  # where review.key is, and what the operator must do
    signing_key_added: str | None = None  # the folder's signing key id, listed in PostgreSQL (its log did not)
    review_item_opened: str | None = None  # the open item viewed on both sides after the copy
    not_carried: dict[str, str] = field(default_factory=lambda: {**NOT_CARRIED, **NOT_CARRIED_FILES})
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"tables": self.tables, "review_pictures": self.review_pictures, "search_log": self.search_log,
                "identity_counters": self.identity_counters, "review_key": self.review_key,
                "signing_key_added": self.signing_key_added, "review_item_opened": self.review_item_opened,
                "not_carried": self.not_carried, "problems": self.problems}


@dataclass
class Prepared:
    source_dir: Path
    target_dir: Path
    database: str
    files: dict[str, list[str]]  # file present in the source -> its tables
    source_log: searchlog.Verification | None
    review_key: str
    signing_key: tuple[str, str] | None = None  # (key id, public key) of the folder, when its log does not list it


def _sqlite(path: Path) -> SQLiteDatabase:
    """A source file through the seam (it exists: the seam would create a missing one)."""
    db = open_database(None, path, lock=0, name=path.name, unavailable=AccountabilityRefused)
    assert isinstance(db, SQLiteDatabase)
    return db


def _postgres(database: str) -> PostgresDatabase:
    db = open_database(database, "", lock=_MIGRATION_LOCK, name="accountability migration",
                       unavailable=AccountabilityRefused, pool_size=1)
    assert isinstance(db, PostgresDatabase)
    return db


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_tables(path: Path) -> list[str]:
    """The tables of one SQLite file, read only (no migration, nothing created)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


def _upgrade_source(source_dir: Path, present: set[str]
                    ) -> tuple[searchlog.Verification | None, tuple[str, str] | None]:
    """Open each source store once: an older file is brought to this code's schema (what a server
    starting on the folder does) and a store that cannot open (its key lost...) refuses here."""
    try:
        if state.DB_FILENAME in present:
            state.AccountabilityState(source_dir, pool_size=1).close()
        if review.DB_FILENAME in present:
            review.ReviewStore(source_dir).close()
        if retention.LEDGER_FILENAME in present:
            retention.RetentionLedger(source_dir, pool_size=1).close()
        if searchlog.DB_FILENAME in present:
            contents = searchlog.read_data_dir(source_dir)
            verification = contents.verify()
            if not verification.ok:
                assert verification.problem is not None
                raise AccountabilityRefused(f"the data folder's search log does not verify (record "
                                            f"{verification.problem.seq}: {verification.problem.message}): "
                                            "'faceaudit log verify' says more; it is not migrated as it is")
            own = None  # the folder's signing key, if its log does not list it (a log never opened since v2)
            if contents.public_key and verification.key_id and verification.key_id not in contents.public_keys:
                own = (verification.key_id, contents.public_key)
            return verification, own
    except AccountabilityRefused:
        raise
    except Exception as error:  # each store's own error: StateError, SealedBlobError, SearchLogError...
        raise AccountabilityRefused(f"the data folder's accountability stores cannot be opened: {error}") from error
    return None, None


def _copy_review_key(source_dir: Path, target_dir: Path) -> str:
    """review.key into the target data directory (0600, never over another key); what was done."""
    source_key = source_dir / REVIEW_KEY_FILENAME
    if not source_key.is_file():
        return "the data folder has no review.key (no review pictures)"
    if source_dir.resolve() == target_dir.resolve():
        return (f"{source_key} seals the review pictures, now in PostgreSQL: run the servers on the database "
                f"with --data-dir {source_dir}, or copy that file (mode 0600) to each one's data directory")
    wanted = source_key.read_bytes()
    target_key = target_dir / REVIEW_KEY_FILENAME
    if target_key.exists():
        if target_key.read_bytes() != wanted:
            raise AccountabilityRefused(f"{target_key} is another key than {source_key}, which seals the review "
                                        "pictures being migrated: move it away, or give another --target-data-dir")
        return f"{target_key} is already the key that seals the review pictures"
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target_dir, 0o700)
    if not install_key(target_key, wanted):
        raise AccountabilityRefused(f"{target_key} appeared while it was being written: run the command again")
    return (f"copied {source_key} to {target_key} (mode 0600): every other server on the database needs the "
            "same file in its data directory")


def _open_targets(target_dir: Path, database: str, present: set[str]) -> None:
    """Open the target stores once: their PostgreSQL migrations create the tables at this code's version."""
    try:
        if state.DB_FILENAME in present:
            state.AccountabilityState(target_dir, database=database, pool_size=1).close()
        if review.DB_FILENAME in present:
            review.ReviewStore(target_dir, database=database).close()
        if retention.LEDGER_FILENAME in present:
            retention.RetentionLedger(target_dir, database=database, pool_size=1).close()
        if searchlog.DB_FILENAME in present:
            searchlog.SearchLog(target_dir, database=database).close()
    except Exception as error:
        raise AccountabilityRefused(f"the accountability tables in PostgreSQL cannot be opened: {error}") from error


def _target_rows(conn: Any, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {_quoted(table)}").fetchone()[0])


def _refuse_unless_empty(database: str, tables: list[str]) -> None:
    """AccountabilityRefused if any of ``tables`` that exists in the target holds a row."""
    db = _postgres(database)
    try:
        with db.read() as conn:
            held = {table: _target_rows(conn, table) for table in tables
                    if conn.execute("SELECT to_regclass(?)", (table,)).fetchone()[0] is not None}
    finally:
        db.close()
    full = {table: rows for table, rows in held.items() if rows}
    if full:
        raise AccountabilityRefused("the target database's accountability tables already hold rows ("
                                    + ", ".join(f"{t}: {n}" for t, n in sorted(full.items()))
                                    + "): migrate into an empty database (or schema) only")


def prepare(source_dir: str | os.PathLike, database: str, target_dir: str | os.PathLike | None = None) -> Prepared:
    """Everything checked before a row is written (see the module docstring); AccountabilityRefused if not."""
    source_dir = Path(source_dir)
    target = Path(target_dir) if target_dir is not None else source_dir
    present = {name for name in CARRIED if (source_dir / name).is_file()}
    source_log, signing_key = _upgrade_source(source_dir, present)
    files = {name: sqlite_tables(source_dir / name) for name in sorted(present)}
    for name, tables in files.items():
        unknown = [t for t in tables if t not in CARRIED[name] and t not in NOT_CARRIED]
        if unknown:
            raise AccountabilityRefused(f"{source_dir / name} holds table(s) {', '.join(unknown)} that this "
                                        "faceaudit does not know how to migrate (neither copied nor listed as not "
                                        "carried): nothing was written")
    wanted_empty = [table for name in present for table in CARRIED[name] if table not in MERGED]
    if review.DB_FILENAME in present:
        wanted_empty.append("review_blobs")
    _refuse_unless_empty(database, wanted_empty)  # the tables there already (before a key is copied)
    review_key = _copy_review_key(source_dir, target)
    _open_targets(target, database, present)
    _refuse_unless_empty(database, wanted_empty)  # and all of them, now that they exist
    return Prepared(source_dir, target, database, files, source_log, review_key, signing_key)


def _columns(source: Any, target: Any, table: str) -> list[str]:
    """The source table's columns, each of which the target table must have (copied by name)."""
    columns = [row[1] for row in source.execute(f"PRAGMA table_info({_quoted(table)})")]
    have = {row[0] for row in target.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped",
        (table,))}
    missing = [c for c in columns if c not in have]
    if missing:
        raise AccountabilityRefused(f"the PostgreSQL table {table} has no column(s) {', '.join(missing)} of the "
                                    "data folder's: nothing was written")
    return columns


def _primary_key(source: Any, table: str) -> list[str]:
    rows = sorted((row[5], row[1]) for row in source.execute(f"PRAGMA table_info({_quoted(table)})") if row[5])
    return [name for _, name in rows]


def _copy_table(source: Any, target: Any, table: str) -> int:
    columns = _columns(source, target, table)
    names = ", ".join(_quoted(c) for c in columns)
    insert = f"INSERT INTO {_quoted(table)} ({names}) VALUES ({', '.join('?' * len(columns))})"
    if table in MERGED:
        key = _primary_key(source, table)
        others = [c for c in columns if c not in key]
        insert += f" ON CONFLICT ({', '.join(_quoted(c) for c in key)}) DO " + (
            "UPDATE SET " + ", ".join(f"{_quoted(c)} = excluded.{_quoted(c)}" for c in others) if others
            else "NOTHING")
    cursor = source.execute(f"SELECT {names} FROM {_quoted(table)} ORDER BY rowid")
    copied = 0
    while rows := cursor.fetchmany(PAGE):
        target.executemany(insert, rows)
        copied += len(rows)
    return copied


def _copy_pictures(source_dir: Path, source: Any, target: Any) -> int:
    """Every sealed picture a review row names: the file's bytes as the ``bytea`` row (same format)."""
    named = [row[0] for row in source.execute(
        "SELECT probe_blob FROM items WHERE probe_blob IS NOT NULL UNION SELECT crop_blob FROM face_crops")]
    blobs = SealedBlobs(source_dir)  # also checks the key is there and private
    rows, copied = [], 0
    for blob_id in named:
        path = source_dir / BLOB_DIRNAME / blob_id
        if not blobs.exists(blob_id):
            continue  # the source's own loss, reported by check(): never a row made up for it
        rows.append((blob_id, path.read_bytes(), blobs.sealed_at(blob_id)))
        if len(rows) >= 100:  # pictures are tens of kB: small batches
            target.executemany("INSERT INTO review_blobs (blob_id, sealed, sealed_at) VALUES (?, ?, ?)", rows)
            copied, rows = copied + len(rows), []
    target.executemany("INSERT INTO review_blobs (blob_id, sealed, sealed_at) VALUES (?, ?, ?)", rows)
    return copied + len(rows)


def _move_identities(source: Any, target: Any, table: str, report: AccountabilityCopy) -> None:
    """Each identity column of ``table`` past the highest id copied and SQLite's AUTOINCREMENT counter."""
    identities = [row[0] for row in target.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(?) AND attnum > 0 AND attidentity <> ''",
        (table,))]
    for column in identities:
        highest = target.execute(f"SELECT MAX({_quoted(column)}) FROM {_quoted(table)}").fetchone()[0] or 0
        has_counters = source.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'").fetchone()
        counter = source.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone() \
            if has_counters else None
        last = max(int(highest), int(counter[0]) if counter else 0)
        if last > 0:
            target.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)", (table, column, last))
            report.identity_counters[f"{table}.{column}"] = last


def _log_in_transaction(target: Any) -> searchlog.Verification:
    """The log as the transaction holds it, through the log's own verification (before the commit)."""
    texts = [row[0] for row in target.execute("SELECT record FROM searchlog_records ORDER BY seq")]
    checkpoints = [json.loads(row[0]) for row in target.execute(
        "SELECT checkpoint FROM searchlog_checkpoints ORDER BY seq")]
    keys = dict(target.execute("SELECT key_id, public_key FROM searchlog_keys").fetchall())
    row = target.execute("SELECT value FROM searchlog_meta WHERE name = 'log_id'").fetchone()
    return searchlog.verify(texts, checkpoints, public_keys=keys, log_id=None if row is None else str(row[0]))


def _same_log(source: searchlog.Verification, target: searchlog.Verification) -> str | None:
    """Why the target's log is not the source's, or None."""
    if not target.ok:
        assert target.problem is not None
        return f"record {target.problem.seq}: {target.problem.message}"
    for what, a, b in (("records", source.records, target.records), ("head", source.head_seq, target.head_seq),
                       ("head hash", source.head_hash, target.head_hash),
                       ("checkpoints", source.checkpoints, target.checkpoints)):
        if a != b:
            return f"{what} {a} in the data folder, {b} in the database"
    return None


def copy_into(prepared: Prepared, report: AccountabilityCopy | None = None) -> AccountabilityCopy:
    """Copy every carried table and picture in one PostgreSQL transaction; AccountabilityRefused
    (and nothing written) if the log read back inside it does not verify with the source's head."""
    report = report or AccountabilityCopy(review_key=prepared.review_key)
    db = _postgres(prepared.database)
    sources = {name: _sqlite(prepared.source_dir / name) for name in prepared.files}
    failures: tuple[type[BaseException], ...] = (*db.errors, sqlite3.Error)
    try:
        _copy_all(prepared, sources, db, report)
    except failures as error:  # a row PostgreSQL will not take: rolled back with the rest
        raise AccountabilityRefused(f"copying the accountability data failed ({error}): no accountability "
                                    "row was written") from error
    finally:
        for source_db in sources.values():
            source_db.close()
        db.close()
    return report


def _copy_all(prepared: Prepared, sources: dict[str, SQLiteDatabase], db: PostgresDatabase,
              report: AccountabilityCopy) -> None:
    """The one transaction of :func:`copy_into`: anything raised inside rolls all of it back."""
    with db.write() as target:
        for name, source_db in sources.items():
            with source_db.snapshot() as source:
                for table in CARRIED[name]:
                    if table in prepared.files[name]:
                        _copy_table(source, target, table)
                        _move_identities(source, target, table, report)
                if name == review.DB_FILENAME:
                    report.review_pictures = _copy_pictures(prepared.source_dir, source, target)
        if prepared.signing_key is not None:  # what SearchLog does when it opens on the folder
            target.execute("INSERT INTO searchlog_keys (key_id, public_key, added_at) VALUES (?, ?, ?) "
                           "ON CONFLICT (key_id) DO NOTHING", (*prepared.signing_key, time.time()))
            report.signing_key_added = prepared.signing_key[0]
        if prepared.source_log is not None:
            why = _same_log(prepared.source_log, _log_in_transaction(target))
            if why:  # raising rolls the whole copy back
                raise AccountabilityRefused(
                    f"the search log copied into PostgreSQL is not the one checked ({why}; is a server still "
                    "running on the data folder?): no accountability row was written")


def _sealed_digests(source_dir: Path, blob_ids: list[str]) -> dict[str, str]:
    return {b: hashlib.sha256((source_dir / BLOB_DIRNAME / b).read_bytes()).hexdigest()
            for b in blob_ids if (source_dir / BLOB_DIRNAME / b).is_file()}


def check(prepared: Prepared, report: AccountabilityCopy) -> AccountabilityCopy:
    """Counts per table on both sides, the log through its own reader on PostgreSQL, the review
    pictures (all compared sealed, a sample opened with the target data directory's key)."""
    db = _postgres(prepared.database)
    named: list[str] = []
    try:
        with db.snapshot() as target:
            for name, tables in prepared.files.items():
                source_db = _sqlite(prepared.source_dir / name)
                try:
                    with source_db.snapshot() as source:
                        for table in CARRIED[name]:
                            if table not in tables:
                                continue
                            counts = {"source": int(source.execute(
                                f"SELECT COUNT(*) FROM {_quoted(table)}").fetchone()[0]),
                                "target": _target_rows(target, table)}
                            report.tables[table] = counts
                            short = counts["target"] < counts["source"] if table in MERGED \
                                else counts["target"] != counts["source"]
                            if short:
                                report.problems.append(f"{table}: {counts['source']} rows in the data folder, "
                                                       f"{counts['target']} in the database")
                        if name == review.DB_FILENAME:
                            named = [row[0] for row in source.execute(
                                "SELECT probe_blob FROM items WHERE probe_blob IS NOT NULL "
                                "UNION SELECT crop_blob FROM face_crops ORDER BY 1")]
                finally:
                    source_db.close()
            if named:
                wanted = _sealed_digests(prepared.source_dir, named)
                got = dict(target.execute("SELECT blob_id, encode(sha256(sealed), 'hex') FROM review_blobs")
                           .fetchall())
                report.tables["review_blobs"] = {"source": len(wanted), "target": len(got)}
                lost = len(named) - len(wanted)
                if lost:
                    report.problems.append(f"review pictures: {lost} named by review rows are missing from "
                                           f"{prepared.source_dir / BLOB_DIRNAME} (not carried)")
                if {b: got.get(b) for b in wanted} != wanted:
                    report.problems.append("review pictures: the sealed bytes in the database differ from the "
                                           "data folder's")
    finally:
        db.close()
    if named:
        _open_pictures(prepared, named, report)
    if prepared.source_log is not None:
        _check_log(prepared, report)
    return report


def _open_item(prepared: Prepared, store: review.ReviewStore, report: AccountabilityCopy) -> None:
    """The oldest open review item, as a reviewer sees it (probe and crops), the same on both sides."""
    db = _sqlite(prepared.source_dir / review.DB_FILENAME)
    try:
        with db.read() as conn:
            row = conn.execute("SELECT item_id FROM items WHERE state = 'open' ORDER BY seq LIMIT 1").fetchone()
    finally:
        db.close()
    if row is None:
        return
    report.review_item_opened = str(row[0])
    with review.ReviewStore(prepared.source_dir) as source:
        wanted = source.blind_view(_CHECKING_REVIEWER, row[0])
    try:
        got = store.blind_view(_CHECKING_REVIEWER, row[0])
    except Exception as error:  # InternalServerError: a picture missing or not opening with the key
        report.problems.append(f"review item {row[0]} does not open on PostgreSQL from {prepared.target_dir}: "
                               f"{getattr(error, 'message', error)}")
        return
    if got != wanted:
        report.problems.append(f"review item {row[0]} shows another probe or other candidates on PostgreSQL")


def _open_pictures(prepared: Prepared, named: list[str], report: AccountabilityCopy) -> None:
    """The oldest open item viewed, and a sample of pictures opened, on PostgreSQL with the
    target data directory's review.key."""
    source = SealedBlobs(prepared.source_dir)
    try:
        store = review.ReviewStore(prepared.target_dir, database=prepared.database)
    except Exception as error:  # SealedBlobError: the target directory's key is not the pictures' key
        report.problems.append(f"the review store on PostgreSQL does not open from {prepared.target_dir}: {error}")
        return
    try:
        _open_item(prepared, store, report)
        for blob_id in named[:PICTURES_OPENED]:
            if not source.exists(blob_id):
                continue
            try:
                same = store.blobs.open(blob_id) == source.open(blob_id)
            except SealedBlobError as error:
                report.problems.append(f"review picture {blob_id} does not open on PostgreSQL with "
                                       f"{prepared.target_dir / REVIEW_KEY_FILENAME}: {error}")
                return
            if not same:
                report.problems.append(f"review picture {blob_id} opens to other bytes on PostgreSQL")
                return
    finally:
        store.close()


def _check_log(prepared: Prepared, report: AccountabilityCopy) -> None:
    assert prepared.source_log is not None
    try:
        verification = searchlog.read_data_dir(prepared.target_dir, prepared.database).verify()
    except searchlog.SearchLogError as error:
        report.problems.append(f"search log: {error}")
        return
    report.search_log = {"source": _log_summary(prepared.source_log), "target": _log_summary(verification)}
    why = _same_log(prepared.source_log, verification)
    if why:
        report.problems.append(f"search log on PostgreSQL: {why}")


def _log_summary(verification: searchlog.Verification) -> dict[str, Any]:
    return {"ok": verification.ok, "records": verification.records, "head_seq": verification.head_seq,
            "head_hash": verification.head_hash, "checkpoints_checked": verification.checkpoints,
            "log_id": verification.log_id}


def carry(prepared: Prepared) -> AccountabilityCopy:
    """:func:`copy_into` then :func:`check` (a check that cannot run is a problem it reports)."""
    import psycopg  # the target is PostgreSQL: installed

    report = copy_into(prepared)
    try:
        return check(prepared, report)
    except (sqlite3.Error, psycopg.Error, OSError, AccountabilityRefused) as error:
        report.problems.append(f"the check after the copy could not run: {error}")
    return report
