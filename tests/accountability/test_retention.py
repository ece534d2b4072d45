"""Retention on a real data directory: the periods a collection's tags and policy give, and the purge.

The face store, the tags, the review store, the ledger and the search log are the real ones,
on both backends (``database``: SQLite files in a temporary data directory, or tables of a
PostgreSQL schema, as `serve --database` puts them); faces are synthetic vectors (no model);
time is injected (``now``), never slept.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from faceaudit.access import AccessKey
from faceaudit.accountability.context import CASE_HEADER, PURPOSE_HEADER, Caller, Facts
from faceaudit.accountability.policies import POLICY_TAG, RETENTION_TAGS, check_retention_tag
from faceaudit.accountability.retention import (
    LEASE_S,
    LEDGER_FILENAME,
    MIGRATIONS,
    PurgeLeaseLost,
    Retention,
    RetentionLedger,
)
from faceaudit.accountability.review import ReviewStore
from faceaudit.accountability.searchlog import SearchLog, read_data_dir
from faceaudit.accountability.state import AccountabilityState
from faceaudit.errors import InvalidParameterException, ResourceNotFoundException
from faceaudit.storage import StoredFace, open_store
from support.images import encode

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BOX = {"Left": 0.25, "Top": 0.2, "Width": 0.4, "Height": 0.5}
OPERATOR = AccessKey("AKOPERATOR0000000001", "op", "operator", None, T0, "created")


def face(rng: np.random.Generator) -> StoredFace:
    vector = rng.standard_normal(16).astype(np.float32)
    return StoredFace(str(uuid.uuid4()), str(uuid.uuid4()), None, dict(BOX), 99.0, "test-1", None,
                      vector / np.linalg.norm(vector))


class DataDir:
    """Everything retention touches, opened on one directory (as a server or `faceaudit retention` does)."""

    def __init__(self, path, database: str | None = None):
        self.path, self.database = path, database
        self.store = open_store(database, path, pool_size=1)
        self.state = AccountabilityState(path, database=database, pool_size=1)
        self.log = SearchLog(path, database=database)
        self.review = ReviewStore(path, recorder=self.log, database=database)
        self.ledger = RetentionLedger(path, database=database, pool_size=1)
        self.retention = Retention(self.state, self.store, self.review, self.ledger, self.log)
        self.rng = np.random.default_rng(7)

    def close(self):
        for part in (self.ledger, self.review, self.log, self.state, self.store):
            part.close()

    def collection(self, tags: dict[str, str] | None = None) -> str:
        collection_id = f"c-{uuid.uuid4().hex[:8]}"
        self.store.create_collection(collection_id, "test-1")
        self.state.set_tags(collection_id, tags or {}, replace=True)
        return collection_id

    def index(self, collection_id: str, n: int, at: datetime, *, crops: bool = False) -> list[str]:
        """n faces indexed at ``at``, noted in the ledger as the guard notes them."""
        faces = [face(self.rng) for _ in range(n)]
        self.store.add_faces(collection_id, faces)
        ids = [f.face_id for f in faces]
        self.ledger.note_faces(collection_id, ids, at)
        if crops:
            picture = encode(self.rng.integers(0, 256, (120, 120, 3), dtype=np.uint8))
            self.review.keep_face_crops(collection_id, picture, [{"FaceId": i, "BoundingBox": BOX} for i in ids])
        return ids

    def open_item(self, collection_id: str, face_ids: list[str], at: datetime) -> str:
        caller = Caller(OPERATOR, str(uuid.uuid4()), at, {PURPOSE_HEADER: "a case", CASE_HEADER: "C-1"})
        response = {"FaceMatches": [{"Similarity": 99.5, "Face": {"FaceId": f}} for f in face_ids]}
        probe = encode(self.rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))
        return self.review.open_item(caller, collection_id, "public-safety", probe, response, Facts())

    def retention_records(self) -> list[dict]:
        return [r for r in read_data_dir(self.path, self.database).records() if r.get("kind") == "retention"]


@pytest.fixture
def data(tmp_path, database):
    opened = DataDir(tmp_path / "data", database)
    yield opened
    opened.close()


def test_periods_come_from_the_tags_within_the_policys_maximum(data):
    plain = data.collection()
    assert data.retention.periods(plain).days == {"faces": None, "probes": 30, "review-items": 30}
    tagged = data.collection({RETENTION_TAGS["faces"]: "365", RETENTION_TAGS["review-items"]: "10"})
    periods = data.retention.periods(tagged)
    assert periods.days == {"faces": 365, "probes": 10, "review-items": 10}  # a probe goes with its item
    assert periods.source["faces"] == "tag"
    # public-safety caps what a tag written before the policy asked for
    capped = data.collection({POLICY_TAG: "public-safety", RETENTION_TAGS["review-items"]: "400"})
    periods = data.retention.periods(capped)
    assert periods.days["review-items"] == 90 and "capped by the policy public-safety" in periods.source["review-items"]
    assert periods.days["probes"] == 30
    # a value written around the guard's checks never means "purge at once" nor "forever"
    odd = data.collection({RETENTION_TAGS["faces"]: "0", RETENTION_TAGS["probes"]: "soon"})
    assert data.retention.periods(odd).days == {"faces": None, "probes": 30, "review-items": 30}
    # the older `review retention` still counts until a tag says otherwise
    data.review.set_retention(plain, 12)
    assert data.retention.periods(plain).days["review-items"] == 12
    assert data.retention.periods(plain).source["review-items"] == "review retention"


def test_a_retention_tag_is_a_day_count_within_the_policys_maximum():
    from faceaudit.accountability.policies import PUBLIC_SAFETY
    assert check_retention_tag(RETENTION_TAGS["faces"], "30", None) == 30
    for bad in ("0", "-1", "ten", "1.5", "", "99999999"):
        with pytest.raises(InvalidParameterException, match="whole number of days"):
            check_retention_tag(RETENTION_TAGS["faces"], bad, None)
    with pytest.raises(InvalidParameterException, match="above the 30 days that the use policy public-safety"):
        check_retention_tag(RETENTION_TAGS["probes"], "31", PUBLIC_SAFETY)
    assert check_retention_tag(RETENTION_TAGS["faces"], "3650", PUBLIC_SAFETY) == 3650  # faces: no maximum


def test_expired_faces_go_through_the_store_with_their_users_and_crops_and_one_record_names_them(data):
    collection = data.collection({RETENTION_TAGS["faces"]: "30"})
    old = data.index(collection, 3, T0, crops=True)
    young = data.index(collection, 2, T0 + timedelta(days=20), crops=True)
    data.store.create_user(collection, "alice")
    data.store.associate_faces(collection, "alice", [old[0], young[0]])
    untouched = data.collection()  # no face retention: kept until deleted
    kept = data.index(untouched, 2, T0)
    crops_before = len(data.review.blobs.blob_ids())

    report = data.retention.purge(T0 + timedelta(days=31))

    assert sorted(report.faces[collection]) == sorted(old) and untouched not in report.faces
    assert data.store.get_faces(collection, old) == []
    assert [f.face_id for f in data.store.get_faces(collection, young)] == young
    assert [f.face_id for f in data.store.get_faces(untouched, kept)] == kept
    # the vectors are gone from search, the user keeps only its young face, the crops went
    vector = data.store.get_faces(collection, [young[1]])[0].vector
    found = {f.face_id for f, _ in data.store.search(collection, vector, 100)}
    assert found == set(young)
    assert [f.face_id for f in data.store.list_faces(collection, user_id="alice")[0]] == [young[0]]
    assert len(data.review.blobs.blob_ids()) == crops_before - 3
    [record] = data.retention_records()
    assert record["operation"] == "PurgeExpired" and record["result"] == {"faces": 3, "probes": 0, "items": 0}
    assert sorted(record["details"]["faces"][collection]) == sorted(old)
    assert report.record_seq == record["seq"]
    assert all(data.ledger.seen(collection, f) is None for f in old)  # forgotten once recorded

    # Nothing more is due: no second record.
    assert data.retention.purge(T0 + timedelta(days=31)).empty and len(data.retention_records()) == 1
    assert sorted(data.retention.purge(T0 + timedelta(days=51)).faces[collection]) == sorted(young)


def test_a_face_indexed_around_the_guard_counts_from_when_a_purge_first_saw_it(data):
    collection = data.collection({RETENTION_TAGS["faces"]: "10"})
    stray = face(data.rng)
    data.store.add_faces(collection, [stray])  # e.g. an older faceaudit: no ledger row
    assert data.retention.purge(T0).empty
    assert data.ledger.seen(collection, stray.face_id) == T0
    assert data.retention.purge(T0 + timedelta(days=9)).empty  # kept longer than asked, never shorter
    assert data.retention.purge(T0 + timedelta(days=10)).faces == {collection: [stray.face_id]}


def test_expired_probes_and_items_go_in_one_record_and_a_refused_record_keeps_the_items(data, tmp_path):
    collection = data.collection({POLICY_TAG: "public-safety", RETENTION_TAGS["probes"]: "7",
                                  RETENTION_TAGS["review-items"]: "60"})
    faces = data.index(collection, 2, T0, crops=True)
    old = data.open_item(collection, faces, T0)
    recent = data.open_item(collection, faces, T0 + timedelta(days=55))

    class Refusing:
        def append(self, record):
            raise OSError("log unavailable")

    refused = Retention(data.state, data.store, data.review, data.ledger, Refusing())
    with pytest.raises(OSError):
        refused.purge(T0 + timedelta(days=61))
    assert data.review.result(OPERATOR, old)["ItemId"] == old  # the purge was taken back

    report = data.retention.purge(T0 + timedelta(days=63))
    assert report.items == [old] and report.probes == [recent]
    with pytest.raises(ResourceNotFoundException):
        data.review.result(OPERATOR, old)
    [record] = data.retention_records()
    assert record["details"]["items"] == [old] and record["details"]["probes"] == [recent]
    assert record["result"] == {"faces": 0, "probes": 1, "items": 1}


def test_faces_deleted_before_a_record_could_name_them_are_named_by_the_next_purge(data):
    collection = data.collection({RETENTION_TAGS["faces"]: "1"})
    ids = data.index(collection, 2, T0)

    class Refusing:
        def append(self, record):
            raise OSError("log unavailable")

    with pytest.raises(OSError):  # as if killed between the deletion and the record
        Retention(data.state, data.store, data.review, data.ledger, Refusing()).purge(T0 + timedelta(days=2))
    assert data.store.get_faces(collection, ids) == []  # the deletion itself stands
    report = data.retention.purge(T0 + timedelta(days=2))
    assert sorted(report.faces_already_deleted[collection]) == sorted(ids)
    [record] = data.retention_records()
    assert sorted(record["details"]["faces_already_deleted"][collection]) == sorted(ids)


def test_one_process_purges_at_a_time_and_a_dead_holders_lease_expires(data):
    collection = data.collection({RETENTION_TAGS["faces"]: "1"})
    data.index(collection, 1, T0)
    other_ledger = RetentionLedger(data.path, database=data.database)  # a second server process beside it
    other = Retention(data.state, data.store, data.review, other_ledger, data.log)
    try:
        now = T0 + timedelta(days=2)
        assert other.ledger.take_lease("killed-process", int(now.timestamp() * 1000), interval_ms=None,
                                       lease_ms=int(LEASE_S * 1000))
        assert data.retention.purge_if_due(now, interval_s=None) is None  # held
        later = now + timedelta(seconds=LEASE_S + 1)
        report = data.retention.purge_if_due(later, interval_s=None)
        assert report is not None and report.counts()["faces"] == 1
        # within the interval nobody purges again; after it, the other process may
        assert other.purge_if_due(later + timedelta(minutes=5)) is None
        assert other.purge_if_due(later + timedelta(hours=1, seconds=1)) is not None
    finally:
        other_ledger.close()


class Clock:
    """Seconds for a purge's lease renewals, moved on by hand (the tests never sleep)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowListing:
    """The data directory's real face store, each ListFaces taking the next of ``steps`` seconds of
    ``clock`` and calling ``during(collection_id)`` while it lasts (a purge slower than its lease)."""

    def __init__(self, store, clock: Clock, steps: list[float], during):
        self.store, self.clock, self.steps, self.during = store, clock, list(steps), during
        self.listed: list[str] = []

    def list_faces(self, collection_id, *args, **kwargs):
        self.clock.now += self.steps.pop(0) if self.steps else 0.0
        self.listed.append(collection_id)
        self.during(collection_id)
        return self.store.list_faces(collection_id, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.store, name)


LEASE_TEST_S = 60.0  # a short lease, against purge steps of 25 s (of the injected clock)


def test_a_purge_longer_than_its_lease_renews_it_so_no_other_process_purges_meanwhile(data):
    collections = [data.collection({RETENTION_TAGS["faces"]: "1"}) for _ in range(6)]
    faces = {c: data.index(c, 1, T0) for c in collections}
    now = T0 + timedelta(days=2)
    other = RetentionLedger(data.path, database=data.database)  # another server's, on the same database
    clock, refused = Clock(), []

    def another_process_tries(collection_id):
        took = other.take_lease("host-b", int(now.timestamp() * 1000 + clock.now * 1000), interval_ms=None,
                                lease_ms=int(LEASE_TEST_S * 1000))
        assert not took, f"another process took the lease {clock.now:.0f} s into a purge"
        refused.append(collection_id)

    slow = SlowListing(data.store, clock, [25.0] * 6, another_process_tries)
    purging = Retention(data.state, slow, data.review, data.ledger, data.log, lease_s=LEASE_TEST_S, clock=clock)
    try:
        report = purging.purge_if_due(now, interval_s=None)
        assert clock.now == 150.0 and len(refused) == 6  # 2.5 leases long, refused at every step
        assert report is not None and report.faces == faces
        # released when done: the next purge (after the interval) is anyone's
        assert other.take_lease("host-b", int(now.timestamp() * 1000) + 3_600_000 + 150_000, interval_ms=3_600_000,
                                lease_ms=int(LEASE_TEST_S * 1000))
    finally:
        other.close()


def test_a_purge_that_lost_its_lease_stops_and_the_next_purge_reports_what_it_deleted(data):
    collections = [data.collection({RETENTION_TAGS["faces"]: "1"}) for _ in range(4)]
    faces = {c: data.index(c, 1, T0) for c in collections}
    now = T0 + timedelta(days=2)
    now_ms = int(now.timestamp() * 1000)
    other = RetentionLedger(data.path, database=data.database)
    clock = Clock()

    def stalled_past_the_lease(collection_id):
        if len(slow.listed) == 2:  # the second collection's listing took 100 s: the lease lapsed
            assert other.take_lease("host-b", now_ms + int(clock.now * 1000), interval_ms=None,
                                    lease_ms=int(LEASE_TEST_S * 1000))

    slow = SlowListing(data.store, clock, [25.0, 100.0], stalled_past_the_lease)
    purging = Retention(data.state, slow, data.review, data.ledger, data.log, lease_s=LEASE_TEST_S, clock=clock)
    try:
        with pytest.raises(PurgeLeaseLost, match="another process took the lease over"):
            purging.purge_if_due(now, interval_s=None)
        assert len(slow.listed) == 2  # stopped in the second collection's step
        first = slow.listed[0]
        assert data.store.get_faces(first, faces[first]) == []  # deleted before the lease was lost
        for collection_id in collections:
            if collection_id != first:  # the stalled step and those after it did not delete
                assert [f.face_id for f in data.store.get_faces(collection_id, faces[collection_id])] == \
                    faces[collection_id]
        # the lease stays the other process's (the stopped purge released only its own)
        assert not data.ledger.take_lease("host-c", now_ms + 130_000, interval_ms=None, lease_ms=1000)
        other.release_lease("host-b", now_ms + 130_000, done=False)
        report = data.retention.purge_if_due(now + timedelta(minutes=3), interval_s=None)
        assert report is not None and report.faces_already_deleted == {first: faces[first]}
        assert report.faces == {c: faces[c] for c in collections if c != first}
        assert [r["details"]["faces_already_deleted"] for r in data.retention_records()] == [{first: faces[first]}]
    finally:
        other.close()


def test_set_days_writes_the_tag_and_a_policy_record_and_checks_the_maximum(data):
    collection = data.collection({POLICY_TAG: "public-safety"})
    periods = data.retention.set_days(collection, "review-items", 45, "admin-user")
    assert periods.days["review-items"] == 45 and data.state.tag(collection, RETENTION_TAGS["review-items"]) == "45"
    [record] = [r for r in read_data_dir(data.path, data.database).records() if r.get("kind") == "policy"]
    assert record["details"]["retention"] == {"review-items": {"previous": None, "days": "45"}}
    with pytest.raises(InvalidParameterException, match="90 days"):
        data.retention.set_days(collection, "review-items", 91, "admin-user")
    assert data.retention.set_days(collection, "review-items", None, "admin-user").days["review-items"] == 30
    with pytest.raises(ResourceNotFoundException):
        data.retention.set_days("no-such-collection", "faces", 3, "admin-user")


def test_the_retention_command_shows_sets_clears_and_purges(data, server_database, capsys):
    from faceaudit import cli
    collection = data.collection({POLICY_TAG: "public-safety"})
    ids = data.index(collection, 2, datetime.now(UTC) - timedelta(days=5))

    def run(*args) -> tuple[int, str, str]:
        code = cli.main(["retention", *args, "--data-dir", str(data.path)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("show", collection)
    assert code == 0
    shown = json.loads(out)["Collections"][0]["Retention"]
    assert shown["faces"] == {"Days": None, "Source": "policy default"} and shown["probes"]["Days"] == 30
    code, _, err = run("set", collection, "probes", "31")
    assert code == 2 and "InvalidParameterException" in err and "30 days" in err
    code, out, _ = run("set", collection, "faces", "3")
    assert code == 0 and json.loads(out)["Retention"]["faces"] == {"Days": 3, "Source": "tag"}
    code, out, _ = run("purge")
    assert code == 0 and sorted(json.loads(out)["PurgedFaces"][collection]) == sorted(ids)
    assert data.store.get_faces(collection, ids) == []
    code, out, _ = run("clear", collection, "faces")
    assert code == 0 and json.loads(out)["Retention"]["faces"]["Days"] is None
    code, _, err = run("show", "no-such-collection")
    assert code == 2 and "ResourceNotFoundException" in err


def test_two_hosts_on_one_postgresql_share_the_lease_and_the_index_times(tmp_path, postgres_url):
    """Servers on one --database with data directories of their own: one purges at a time, and
    a face indexed through one host is counted from then by the purge of the other."""
    from support.postgres import create_schema, drop_schema, fresh_schema, url_with_schema

    schema = fresh_schema()
    create_schema(postgres_url, schema)
    database = url_with_schema(postgres_url, schema)
    try:
        with RetentionLedger(tmp_path / "a", database=database, pool_size=1) as a, \
                RetentionLedger(tmp_path / "b", database=database, pool_size=1) as b:
            a.note_faces("watch", ["face-1"], T0)
            b.note_faces("watch", ["face-1", "face-2"], T0 + timedelta(days=3))  # face-1 keeps T0
            assert (b.seen("watch", "face-1"), a.seen("watch", "face-2")) == (T0, T0 + timedelta(days=3))
            assert a.seen_before("watch", int((T0 + timedelta(days=1)).timestamp() * 1000)) == ["face-1"]

            now = int(T0.timestamp() * 1000)
            lease = int(LEASE_S * 1000)
            assert a.take_lease("host-a", now, interval_ms=None, lease_ms=lease)
            assert not b.take_lease("host-b", now + 1000, interval_ms=None, lease_ms=lease)  # held by A
            a.release_lease("host-a", now + 2000, done=True)
            hour = 3_600_000
            assert not b.take_lease("host-b", now + 3000, interval_ms=hour, lease_ms=lease)  # A purged just now
            assert b.take_lease("host-b", now + 2000 + hour, interval_ms=hour, lease_ms=lease)
            b.forget_faces("watch", ["face-1"])
            assert a.seen("watch", "face-1") is None and a.collections() == ["watch"]
        assert not (tmp_path / "a" / LEDGER_FILENAME).exists() and not (tmp_path / "b" / LEDGER_FILENAME).exists()
    finally:
        drop_schema(postgres_url, schema)


def test_a_retention_db_of_an_earlier_release_keeps_its_times_and_lease(tmp_path):
    """The SQLite ledger's first migration is the schema retention.db has had since retention came."""
    path = tmp_path / "data"
    path.mkdir(mode=0o700)
    conn = sqlite3.connect(path / LEDGER_FILENAME, isolation_level=None)
    for statement in MIGRATIONS[1]:
        assert isinstance(statement, str)
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute("INSERT INTO faces_seen VALUES ('watch', 'face-1', ?)", (int(T0.timestamp() * 1000),))
    conn.execute("UPDATE purge_lease SET holder = 'earlier', until_ms = ?", (int(T0.timestamp() * 1000) + 60_000,))
    conn.close()
    (path / LEDGER_FILENAME).chmod(0o600)
    with RetentionLedger(path) as ledger:
        assert ledger.seen("watch", "face-1") == T0
        assert not ledger.take_lease("now", int(T0.timestamp() * 1000), interval_ms=None, lease_ms=1000)
        ledger.note_faces("watch", ["face-1"], T0 + timedelta(days=1))
        assert ledger.seen("watch", "face-1") == T0
