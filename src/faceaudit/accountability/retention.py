"""Retention: how long a collection keeps its faces, probe pictures and review items, and the purge.

What is kept, per collection (docs/accountability.md, "Retention"):

* **faces** -- an indexed face (its vector, its record, its user association, its kept crop),
  counted from when it was indexed;
* **probes** -- the probe picture a search under a review policy keeps for its reviewers,
  counted from the search (never longer than the item it belongs to);
* **review items** -- the item: its candidates, decisions and probe, counted from the search.

How long: the collection's tags ``faceaudit:retention:faces``, ``faceaudit:retention:probes``
and ``faceaudit:retention:review-items`` (a whole number of days; only an admin key sets,
changes or removes them, as the ``faceaudit:policy`` tag; ``faceaudit retention set``), else
the use policy's default (faceaudit.accountability.policies: faces until deleted; probes and
review items 30 days), and never more than the policy's maximum (public-safety: probes 30 days,
review items 90). A collection whose item retention was set with the older ``faceaudit review
retention`` keeps it until a tag says otherwise.

When a face was indexed: the face store keeps no time per face, so this module keeps a
ledger, ``DATA_DIR/retention.db`` (with ``--database postgresql://...``, the tables
``faces_seen`` and ``purge_lease`` of that database, through faceaudit.storage.sql_database,
so every server on it shares them) -- the guard notes each face IndexFaces stores, and each
purge first notes any face of a collection with a face retention that the ledger has not seen
(indexed by a path that bypasses the guard), counting it from then: such a face is kept
*longer* than its period, never shorter. The ledger only ever holds ids and times.

The purge (:meth:`Retention.purge`): each expired face goes through the store's own
``delete_faces`` (after ``disassociate_faces`` if it belongs to a user, as Rekognition
requires), then its crop through the review store; expired items and probes are deleted in
one review-store transaction inside which one search-log record of kind ``retention`` is
appended, naming every FaceId, item and probe purged -- a record the log refuses takes the
item deletions back. A face stays in the ledger until a record names it, so a process killed
between a face's deletion and the record reports it at the next purge. Every server purges
at start and then every :data:`PURGE_INTERVAL_S`; a lease row in the ledger lets one process
of those sharing a data directory (or a PostgreSQL database) purge at a time
(:meth:`Retention.purge_if_due`), and a killed holder's lease expires after :data:`LEASE_S`.
A purge works in bounded steps (a collection, a page of its faces, a chunk of deletions, the
review purge) and renews its lease between them once a third of it has passed, so a purge that
runs longer than the lease keeps it; one that finds the lease taken over (a single step outlived
the lease and another process took it) stops there with :class:`PurgeLeaseLost`, and what it had
deleted is reported by the next purge, as after a kill.

Only the FaceStore interface is used, so the purge is the same over PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from faceaudit.access.keys import AccessKey
from faceaudit.accountability.context import key_fields, utc_time
from faceaudit.accountability.policies import (
    DEFAULT_RETENTION,
    POLICIES,
    POLICY_TAG,
    RETENTION_KINDS,
    RETENTION_TAGS,
    UsePolicy,
    check_retention_tag,
)
from faceaudit.accountability.state import AccountabilityState
from faceaudit.errors import InternalServerError, InvalidParameterException, ResourceNotFoundException
from faceaudit.storage import FaceStore
from faceaudit.storage.base import FACE_ID_LIST_MAX, PAGE_SIZE_MAX, USER_FACE_ID_LIST_MAX
from faceaudit.storage.migrations import Step
from faceaudit.storage.sql_database import SqlStore, StoreSchema, open_database, postgres_ddl

__all__ = ["LEDGER_FILENAME", "PURGE_INTERVAL_S", "PurgeLeaseLost", "PurgeReport", "Retention", "RetentionLedger",
           "RetentionPeriods", "RetentionPurger", "open_retention", "purge_record", "record_retention_change"]

LEDGER_FILENAME = "retention.db"
PURGE_INTERVAL_S = 3600.0  # a server purges at start, then at most this often
LEASE_S = 600.0  # a purge not finished after this long is taken to have died with its process
DAY_MS = 86_400_000
BUSY_TIMEOUT_S = 10.0
log = logging.getLogger("faceaudit.retention")

_SCHEMA = [
    """CREATE TABLE faces_seen (
        collection TEXT    NOT NULL,
        face_id    TEXT    NOT NULL,
        seen_ms    INTEGER NOT NULL,   -- indexed (noted by the guard) or first seen by a purge
        PRIMARY KEY (collection, face_id)
    )""",
    "CREATE INDEX faces_seen_by_time ON faces_seen (collection, seen_ms)",
    """CREATE TABLE purge_lease (
        name         TEXT PRIMARY KEY,
        holder       TEXT,              -- NULL: nobody is purging
        until_ms     INTEGER NOT NULL DEFAULT 0,
        last_done_ms INTEGER NOT NULL DEFAULT 0
    )""",
    "INSERT INTO purge_lease (name) VALUES ('purge')",
]
# faceaudit.storage.migrations, per database flavour: version 1 creates the schema (the one retention.db
# has had from the start); a change is a new version. PostgreSQL: the same tables in its types.
MIGRATIONS: dict[int, list[Step]] = {1: list(_SCHEMA)}
POSTGRES_MIGRATIONS: dict[int, list[Step]] = {1: [postgres_ddl(statement) for statement in _SCHEMA]}
POSTGRES_VERSION_TABLE = "retention_schema_version"
_STORE_SCHEMA = StoreSchema(MIGRATIONS, POSTGRES_MIGRATIONS, POSTGRES_VERSION_TABLE)
_LEDGER_LOCK = 0x72657465  # "rete": the advisory lock of every change to the ledger and the lease


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Recorder(Protocol):
    def append(self, record: Mapping[str, Any]) -> Mapping[str, Any]: ...


class ReviewItems(Protocol):
    """What the purge needs of the review store (faceaudit.accountability.review.ReviewStore)."""

    def retention_override(self, collection_id: str) -> int | None: ...
    def collections_with_items(self) -> list[str]: ...
    def purge_before(self, cutoffs: Mapping[str, tuple[int, int]], on_purged: Any = None
                     ) -> tuple[list[str], list[str]]: ...
    def forget_faces(self, collection_id: str, face_ids: list[str]) -> None: ...


class RetentionLedger(SqlStore):
    """When each face was indexed (or first seen), and the purge lease: in ``data_dir/retention.db``,
    or in the PostgreSQL database ``database`` names (a postgresql:// URL; None: the SQLite file),
    shared there by every server on it."""

    def __init__(self, data_dir: str | os.PathLike, *, busy_timeout: float = BUSY_TIMEOUT_S,
                 database: str | None = None, pool_size: int = 4):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LEDGER_FILENAME
        # NORMAL: a row lost to a power cut is noted again by the next purge, later, never earlier.
        super().__init__(open_database(database, self.path, lock=_LEDGER_LOCK, name="retention",
                                       unavailable=InternalServerError, busy_timeout=busy_timeout,
                                       pragmas=("synchronous = NORMAL",), pool_size=pool_size, schema=_STORE_SCHEMA))

    def note_faces(self, collection_id: str, face_ids: Iterable[str], at: datetime) -> None:
        """These faces exist since ``at`` (a face already noted keeps its earlier time)."""
        rows = [(collection_id, str(f), _ms(at)) for f in face_ids]
        if rows:
            with self._db.write() as conn:
                conn.executemany("INSERT INTO faces_seen (collection, face_id, seen_ms) VALUES (?, ?, ?) "
                                 "ON CONFLICT (collection, face_id) DO NOTHING", rows)

    def seen(self, collection_id: str, face_id: str) -> datetime | None:
        rows = self._db.rows("SELECT seen_ms FROM faces_seen WHERE collection = ? AND face_id = ?",
                             (collection_id, face_id))
        return datetime.fromtimestamp(rows[0][0] / 1000, UTC) if rows else None

    def seen_before(self, collection_id: str, before_ms: int) -> list[str]:
        return [r[0] for r in self._db.rows(
            "SELECT face_id FROM faces_seen WHERE collection = ? AND seen_ms <= ? ORDER BY seen_ms, face_id",
            (collection_id, before_ms))]

    def collections(self) -> list[str]:
        return [r[0] for r in self._db.rows("SELECT DISTINCT collection FROM faces_seen ORDER BY collection")]

    def forget_faces(self, collection_id: str, face_ids: Iterable[str]) -> None:
        with self._db.write() as conn:
            conn.executemany("DELETE FROM faces_seen WHERE collection = ? AND face_id = ?",
                             [(collection_id, str(f)) for f in face_ids])

    def forget_collection(self, collection_id: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM faces_seen WHERE collection = ?", (collection_id,))

    def take_lease(self, holder: str, now_ms: int, *, interval_ms: int | None, lease_ms: int) -> bool:
        """Become the one purging, if no live lease is held and (with ``interval_ms``) the last
        purge finished at least that long ago. True if taken."""
        with self._db.write() as conn:  # under the ledger's write lock: one taker at a time, on every host
            held_by, until_ms, last_done_ms = conn.execute(
                "SELECT holder, until_ms, last_done_ms FROM purge_lease WHERE name = 'purge'").fetchone()
            if held_by is not None and held_by != holder and until_ms > now_ms:
                return False
            if interval_ms is not None and now_ms - last_done_ms < interval_ms:
                return False
            conn.execute("UPDATE purge_lease SET holder = ?, until_ms = ? WHERE name = 'purge'",
                         (holder, now_ms + lease_ms))
            return True

    def renew_lease(self, holder: str, now_ms: int, *, lease_ms: int) -> bool:
        """Extend ``holder``'s lease to ``now_ms + lease_ms``; False when it holds it no longer
        (it lapsed and another process took it)."""
        with self._db.write() as conn:
            held_by = conn.execute("SELECT holder FROM purge_lease WHERE name = 'purge'").fetchone()[0]
            if held_by != holder:
                return False
            conn.execute("UPDATE purge_lease SET until_ms = ? WHERE name = 'purge'", (now_ms + lease_ms,))
            return True

    def release_lease(self, holder: str, now_ms: int, *, done: bool) -> None:
        with self._db.write() as conn:
            if done:
                conn.execute("UPDATE purge_lease SET holder = NULL, until_ms = 0, last_done_ms = ? "
                             "WHERE name = 'purge' AND holder = ?", (now_ms, holder))
            else:
                conn.execute("UPDATE purge_lease SET holder = NULL, until_ms = 0 WHERE name = 'purge' "
                             "AND holder = ?", (holder,))


class PurgeLeaseLost(InternalServerError):
    """A purge found its lease taken over by another process (one of its steps outlived the lease): it stopped."""


class _HeldLease:
    """The purge lease while this process purges: :meth:`keep` before each step renews it once a
    third of it has passed (so it cannot lapse between steps), on the clock of the purge's ``now``."""

    def __init__(self, ledger: RetentionLedger, holder: str, start_ms: int, lease_ms: int,
                 clock: Callable[[], float]):
        self.ledger, self.holder, self.start_ms, self.lease_ms, self.clock = ledger, holder, start_ms, lease_ms, clock
        self.started = self.renewed = clock()

    def keep(self) -> None:
        at = self.clock()
        if (at - self.renewed) * 1000 < self.lease_ms / 3:
            return
        if not self.ledger.renew_lease(self.holder, self.start_ms + int((at - self.started) * 1000),
                                       lease_ms=self.lease_ms):
            raise PurgeLeaseLost(f"the retention purge ran {at - self.started:.0f} s, longer than its lease "
                                 f"({self.lease_ms / 1000:.0f} s) at one step, and another process took the "
                                 "lease over: this purge stopped (the next one reports what it deleted)")
        self.renewed = at


@dataclass(frozen=True)
class RetentionPeriods:
    """A collection's retention in days per kind (None: kept until deleted), and where each came from."""

    collection_id: str
    policy: str | None
    days: Mapping[str, int | None]
    source: Mapping[str, str]  # "tag", "tag, capped by the policy", "review retention", "policy default"

    def to_json(self) -> dict[str, Any]:
        return {"CollectionId": self.collection_id, "Policy": self.policy,
                "Retention": {kind: {"Days": self.days[kind], "Source": self.source[kind]}
                              for kind in RETENTION_KINDS}}


@dataclass
class PurgeReport:
    """What one purge removed: FaceIds per collection, review item ids, items whose probe went."""

    time: datetime
    faces: dict[str, list[str]] = field(default_factory=dict)
    faces_already_deleted: dict[str, list[str]] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    record_seq: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.faces or self.faces_already_deleted or self.items or self.probes)

    def counts(self) -> dict[str, int]:
        return {"faces": sum(map(len, self.faces.values())), "probes": len(self.probes), "items": len(self.items)}

    def to_json(self) -> dict[str, Any]:
        return {"Time": utc_time(self.time), "PurgedFaces": self.faces,
                "FacesAlreadyDeleted": self.faces_already_deleted, "PurgedReviewItems": self.items,
                "PurgedProbes": self.probes, "Counts": self.counts(), "LogRecord": self.record_seq}


class Retention:
    """The retention periods of the collections of one data directory, and their purge.

    ``state``: the collections' tags; ``store``: the faces (any FaceStore); ``review``: the
    review store (items, probes, crops); ``ledger``: when faces were indexed; ``recorder``:
    the search log (a purge's record goes there). ``lease_s``: the purge lease; ``clock``: the
    seconds its renewals are timed by."""

    def __init__(self, state: AccountabilityState, store: FaceStore, review: ReviewItems,
                 ledger: RetentionLedger, recorder: Recorder | None = None, *,
                 policies: Mapping[str, UsePolicy] = POLICIES, lease_s: float = LEASE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.state, self.store, self.review, self.ledger = state, store, review, ledger
        self.recorder = recorder
        self.policies = dict(policies)
        self.lease_ms, self._clock = int(lease_s * 1000), clock
        self._holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._running = threading.Lock()

    # -- the periods

    def periods(self, collection_id: str, tags: Mapping[str, str] | None = None) -> RetentionPeriods:
        tags = self.state.tags(collection_id) if tags is None else tags
        policy_name = tags.get(POLICY_TAG)
        policy = self.policies.get(policy_name) if policy_name else None
        rules = policy.retention if policy is not None else DEFAULT_RETENTION
        days: dict[str, int | None] = {}
        source: dict[str, str] = {}
        for kind in RETENTION_KINDS:
            rule = rules.get(kind, DEFAULT_RETENTION[kind])
            tagged, where = None, "policy default"
            if RETENTION_TAGS[kind] in tags:
                text = tags[RETENTION_TAGS[kind]].strip()
                if text.isdigit() and int(text) >= 1:
                    tagged, where = int(text), "tag"
                # else: written around the guard; the default holds, never "forever" nor "at once"
            elif kind == "review-items":
                tagged = self.review.retention_override(collection_id)
                where = "review retention" if tagged is not None else where
            days[kind] = rule.effective(tagged)
            if tagged is not None and days[kind] != tagged:
                where += f", capped by the policy {policy_name}"
            source[kind] = where
        items = days["review-items"]
        if items is not None and (days["probes"] is None or days["probes"] > items):
            days["probes"], source["probes"] = items, "the review items' retention (a probe goes with its item)"
        return RetentionPeriods(collection_id, policy_name, days, source)

    def set_days(self, collection_id: str, kind: str, days: int | None, actor: str, *,
                 key: AccessKey | None = None) -> RetentionPeriods:
        """Set (None: remove) the collection's retention tag for ``kind`` -- the admin's command.

        The change is a search-log record of kind "policy"; a change the log refuses is undone."""
        if kind not in RETENTION_KINDS:
            raise InvalidParameterException(f"Retention kind {kind!r}: one of {', '.join(RETENTION_KINDS)}")
        self.store.describe_collection(collection_id)  # ResourceNotFoundException for an unknown one
        tag = RETENTION_TAGS[kind]
        if days is None:
            before = self.state.remove_tags(collection_id, [tag])
        else:
            policy_name = self.state.tag(collection_id, POLICY_TAG)
            check_retention_tag(tag, str(days), self.policies.get(policy_name) if policy_name else None)
            before = self.state.set_tags(collection_id, {tag: str(days)})
        after = self.state.tags(collection_id)
        try:
            record_retention_change(collection_id, before, after, actor, self.recorder, key=key)
        except BaseException:
            self.state.restore_tags(collection_id, before, if_current=after)
            raise
        return self.periods(collection_id)

    # -- the purge

    def purge_if_due(self, now: datetime | None = None, *, interval_s: float | None = PURGE_INTERVAL_S
                     ) -> PurgeReport | None:
        """Purge if no other process is purging and the last purge is ``interval_s`` old (None: now
        anyway); None if skipped."""
        now = now or datetime.now(UTC)
        if not self._running.acquire(blocking=False):
            return None
        try:
            interval = None if interval_s is None else int(interval_s * 1000)
            if not self.ledger.take_lease(self._holder, _ms(now), interval_ms=interval, lease_ms=self.lease_ms):
                return None
            lease = _HeldLease(self.ledger, self._holder, _ms(now), self.lease_ms, self._clock)
            done = False
            try:
                report = self._purge(now, lease.keep)
                done = True
                return report
            finally:
                self.ledger.release_lease(self._holder, _ms(now), done=done)
        finally:
            self._running.release()

    def purge(self, now: datetime | None = None) -> PurgeReport:
        """Delete every face, probe and review item past its collection's retention at ``now``
        (without the lease: :meth:`purge_if_due` takes it)."""
        return self._purge(now, lambda: None)

    def _purge(self, now: datetime | None, keep_lease: Callable[[], None]) -> PurgeReport:
        """:meth:`purge`, calling ``keep_lease`` before each of its steps (PurgeLeaseLost stops it)."""
        now = now or datetime.now(UTC)
        now_ms = _ms(now)
        report = PurgeReport(now)
        stored = set(self.collection_ids())
        for collection_id in stored:
            keep_lease()
            days = self.periods(collection_id).days["faces"]
            if days is not None:
                self._purge_faces(collection_id, now, now_ms - days * DAY_MS, report, keep_lease)
        for collection_id in self.ledger.collections():
            if collection_id not in stored:  # deleted around the guard: nothing of it is left to keep
                self.ledger.forget_collection(collection_id)
        cutoffs: dict[str, tuple[int, int]] = {}
        for collection_id in self.review.collections_with_items():
            periods = self.periods(collection_id).days
            items, probes = periods["review-items"], periods["probes"]
            cutoffs[collection_id] = (now_ms - items * DAY_MS if items is not None else -1,
                                      now_ms - probes * DAY_MS if probes is not None else -1)

        def record(items: list[str], probes: list[str]) -> None:  # inside the review store's transaction
            keep_lease()  # a lost lease undoes the item deletions: the next purge makes them
            report.items, report.probes = items, probes
            if not report.empty and self.recorder is not None:
                stored_record = self.recorder.append(purge_record(report))
                report.record_seq = stored_record.get("seq")

        keep_lease()
        self.review.purge_before(cutoffs, record)
        for collection_id, face_ids in (*report.faces.items(), *report.faces_already_deleted.items()):
            self.ledger.forget_faces(collection_id, face_ids)  # only once a record names them
        if not report.empty:
            log.info("retention purge: %s", report.counts())
        return report

    def collection_ids(self) -> list[str]:
        """Every collection of the store, in creation order."""
        found: list[str] = []
        token = None
        while True:
            page, token = self.store.list_collections(token, PAGE_SIZE_MAX)
            found += page
            if not token:
                return found

    def _purge_faces(self, collection_id: str, now: datetime, cutoff_ms: int, report: PurgeReport,
                     keep_lease: Callable[[], None]) -> None:
        token = None
        try:
            while True:  # faces indexed around the guard are counted from now
                keep_lease()
                faces, token = self.store.list_faces(collection_id, token, PAGE_SIZE_MAX)
                self.ledger.note_faces(collection_id, [f.face_id for f in faces], now)
                if not token:
                    break
        except ResourceNotFoundException:
            return  # deleted meanwhile
        expired = self.ledger.seen_before(collection_id, cutoff_ms)
        deleted: list[str] = []
        gone: list[str] = []
        for start in range(0, len(expired), FACE_ID_LIST_MAX):
            keep_lease()
            chunk = expired[start:start + FACE_ID_LIST_MAX]
            present = self.store.get_faces(collection_id, chunk)
            present_ids = {f.face_id for f in present}
            gone += [f for f in chunk if f not in present_ids]
            by_user: dict[str, list[str]] = {}
            for face in present:
                if face.user_id is not None:
                    by_user.setdefault(face.user_id, []).append(face.face_id)
            for user_id, ids in by_user.items():  # Rekognition deletes no associated face
                for at in range(0, len(ids), USER_FACE_ID_LIST_MAX):
                    self.store.disassociate_faces(collection_id, user_id, ids[at:at + USER_FACE_ID_LIST_MAX])
            if not present_ids:
                continue
            done, failures = self.store.delete_faces(collection_id, sorted(present_ids))
            deleted += done
            if failures:  # associated again meanwhile: the next purge tries again
                log.warning("retention: %d expired faces of %s were not deleted: %s", len(failures),
                            collection_id, failures[:3])
        forget = deleted + gone
        if forget:
            self.review.forget_faces(collection_id, forget)  # their crops
        if deleted:
            report.faces[collection_id] = deleted
        if gone:
            report.faces_already_deleted[collection_id] = gone


def purge_record(report: PurgeReport) -> dict[str, Any]:
    """The search-log record of one purge (kind "retention")."""
    return {"kind": "retention", "time": utc_time(report.time), "operation": "PurgeExpired",
            "result": report.counts(),
            "details": {"what": "expired faces, probes and review items", "faces": report.faces,
                        "faces_already_deleted": report.faces_already_deleted,
                        "items": report.items, "probes": report.probes}}


def record_retention_change(collection_id: str, before: Mapping[str, str], after: Mapping[str, str], actor: str,
                            recorder: Recorder | None, *, key: AccessKey | None = None,
                            request_id: str | None = None, operation: str | None = None) -> None:
    """A "policy" record when a retention tag changed (the caller undoes the change if this raises)."""
    changed = {kind: {"previous": before.get(tag), "days": after.get(tag)}
               for kind, tag in RETENTION_TAGS.items() if before.get(tag) != after.get(tag)}
    if recorder is None or not changed:
        return
    recorder.append({"kind": "policy", "time": utc_time(None), "request_id": request_id, "key": key_fields(key),
                     "operation": operation, "collection": collection_id, "policy": after.get(POLICY_TAG),
                     "details": {"action": "retention", "retention": changed, "by": actor}})


@contextmanager
def open_retention(data_dir: str | os.PathLike, database: str | None = None) -> Iterator[Retention]:
    """The retention of a data directory (and its ``--database``) with everything it needs opened
    -- its tags, face store, review store, ledger and search log -- closed afterwards (the CLI's)."""
    from faceaudit.accountability.review import ReviewStore
    from faceaudit.accountability.searchlog import SearchLog
    from faceaudit.storage import open_store

    with ExitStack() as stack:
        state = stack.enter_context(AccountabilityState(data_dir, database=database, pool_size=1))
        store = stack.enter_context(open_store(database, data_dir, pool_size=1))
        recorder = SearchLog(data_dir, database=database)
        stack.callback(recorder.close)
        review = stack.enter_context(ReviewStore(data_dir, recorder=recorder, database=database))
        ledger = stack.enter_context(RetentionLedger(data_dir, database=database, pool_size=1))
        yield Retention(state, store, review, ledger, recorder)


class RetentionPurger:
    """A server's purge: once at start, then every ``interval_s`` on a daemon thread, until closed."""

    def __init__(self, retention: Retention, interval_s: float = PURGE_INTERVAL_S):
        self.retention, self.interval_s = retention, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.run_once(interval_s=None)  # at start whatever the others did: a server may have been off for long
        self._thread = threading.Thread(target=self._loop, name="faceaudit-retention", daemon=True)
        self._thread.start()

    def run_once(self, interval_s: float | None) -> PurgeReport | None:
        try:
            return self.retention.purge_if_due(interval_s=interval_s)
        except Exception:  # retried at the next interval; the server keeps serving
            log.exception("retention purge failed")
            return None

    def _loop(self) -> None:
        # Wake more often than the interval: the lease row says whether this process's turn has come.
        while not self._stop.wait(min(self.interval_s, 300.0)):
            self.run_once(interval_s=self.interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
