"""`faceaudit storage migrate` carries the accountability data into PostgreSQL: a public-safety
collection keeps its policy floor and its moratorium, a budget step, a review item (with its sealed
pictures, decided half-way) and the search log (same chain, same head, checkpoints valid) all work
on the target, the next ids do not collide, and no table of any accountability store goes unhandled.

No models: the data folder is made through the stores themselves (a real embedded store and real
SQLite files), and the target is a real PostgreSQL (tests/support/postgres.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from faceaudit.access import SQLiteKeyStore
from faceaudit.access.keys import AccessKey
from faceaudit.accountability.context import Caller, Facts
from faceaudit.accountability.guard import GuardedService, PolicyDenied
from faceaudit.accountability.policies import POLICY_TAG, RETENTION_TAGS
from faceaudit.accountability.retention import RetentionLedger
from faceaudit.accountability.review import ReviewStore
from faceaudit.accountability.searchlog import SearchLog, read_data_dir
from faceaudit.accountability.state import AccountabilityState
from faceaudit.batch.accountability_migration import CARRIED, NOT_CARRIED, NOT_CARRIED_FILES
from faceaudit.console.sessions import SessionStore
from faceaudit.errors import InvalidParameterException
from faceaudit.rekognition.service import RekognitionService
from faceaudit.storage import EmbeddedStore, PostgresStore, StoredFace
from support.images import encode
from support.server import faceaudit_command

NOW = datetime.now(UTC).replace(microsecond=0)
FACES_AND_KEYS = {"faceaudit.db": "the faces (FaceStore)", "access.db": "the keys (KeyStore)"}


def key(name: str, role: str) -> AccessKey:
    return AccessKey(f"AKID{name.upper():0<16}"[:20], name, role, "unit-1", NOW - timedelta(days=1), "created")


def caller(name: str, role: str, **headers: str) -> Caller:
    return Caller(key(name, role), f"req-{uuid.uuid4()}", NOW, {k.replace("_", "-"): v for k, v in headers.items()})


def cli(*args, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([*faceaudit_command(), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr
    return done


@pytest.fixture
def database(postgres_url):
    """A --database URL on a schema of its own."""
    from support.postgres import create_schema, drop_schema, fresh_schema, url_with_schema

    schemas: list[str] = []

    def new() -> str:
        schema = fresh_schema()
        create_schema(postgres_url, schema)
        schemas.append(schema)
        return url_with_schema(postgres_url, schema)

    yield new
    for schema in schemas:
        drop_schema(postgres_url, schema)


def face(i: int) -> StoredFace:
    vector = np.random.default_rng(i).normal(size=128).astype(np.float32)
    return StoredFace(str(uuid.UUID(int=i + 1)), str(uuid.UUID(int=1000 + i)), f"photo-{i}",
                      {"Width": 0.5, "Height": 0.5, "Left": 0.25, "Top": 0.25}, 99.0, "1.0", None,
                      vector / np.linalg.norm(vector))


@pytest.fixture
def data_folder(tmp_path):
    """A data folder with a public-safety collection and every accountability store in use."""
    folder = tmp_path / "embedded"
    store = EmbeddedStore(folder)
    store.create_collection("ps", "1.0")
    faces = [face(i) for i in range(3)]
    store.add_faces("ps", faces)
    store.close()
    SQLiteKeyStore(folder).close()
    picture = encode(np.random.default_rng(7).integers(0, 255, (120, 120, 3), dtype=np.uint8), quality=90)
    log = SearchLog(folder, checkpoint_every=3)
    with AccountabilityState(folder) as state, ReviewStore(folder, recorder=log) as review, \
            RetentionLedger(folder) as ledger:
        state.set_tags("ps", {POLICY_TAG: "public-safety", RETENTION_TAGS["probes"]: "7"})
        moratorium = state.set_moratorium("collection", "ps", "audit of the gallery", "root", at=NOW)
        undone = state.set_moratorium("key", "ana", "a mistake", "root", at=NOW)
        state.undo_moratorium_change(undone)  # a deleted highest id: the next one must not reuse it
        assert state.admit_search("ana", "public-safety", NOW, daily_limit=10, window_s=60, window_limit=5).admitted
        for i in range(4):
            log.append({"kind": "request", "operation": "SearchFacesByImage", "collection": "ps", "status": 200,
                        "details": {"n": i}})
        log.append({"kind": "moratorium", "collection": "ps", "details": {"id": moratorium.id}})
        review.keep_face_crops("ps", picture, [{"Face": {"FaceId": f.face_id, "BoundingBox": f.bounding_box}}
                                               for f in faces])
        facts = Facts()
        item = review.open_item(caller("ana", "operator", x_faceaudit_purpose="p", x_faceaudit_case="c"), "ps",
                                "public-safety", b"probe bytes, sealed as they are",
                                {"FaceMatches": [{"Face": {"FaceId": f.face_id}, "Similarity": 99.5 - i}
                                                 for i, f in enumerate(faces[:2])]}, facts)
        review.decide(caller("rita", "reviewer"), item, [
            {"CandidateId": f.face_id, "Decision": "confirm", "Reason": "same ears"} for f in faces[:2]])
        ledger.note_faces("ps", [f.face_id for f in faces], NOW - timedelta(days=2))
    log.close()  # a checkpoint of the head
    head = read_data_dir(folder).verify()
    assert head.ok and head.checkpoints >= 2
    return {"dir": folder, "faces": faces, "item": item, "moratorium": moratorium, "head": head}


def test_the_accountability_data_works_on_postgresql_after_the_migration(data_folder, database, tmp_path):
    folder, faces, item = data_folder["dir"], data_folder["faces"], data_folder["item"]
    url, host = database(), tmp_path / "postgres-host"
    moved = cli("storage", "migrate", "--data-dir", folder, "--database", url, "--target-data-dir", host, "--quiet")
    summary = json.loads(moved.stdout)
    assert summary["ok"] and summary["problems"] == [], summary["problems"]
    carried = summary["accountability"]
    expected = {"collection_tags": 2, "moratoria": 1, "search_usage": 1, "items": 1, "candidates": 2,
                "decisions": 1, "verdicts": 2, "face_crops": 3, "faces_seen": 3, "review_blobs": 4}
    for table, rows in expected.items():
        assert carried["tables"][table] == {"source": rows, "target": rows}, table
    assert carried["review_pictures"] == 4  # the probe and three crops
    assert carried["review_item_opened"] == item  # viewed blind on both sides, the same
    source_log, target_log = carried["search_log"]["source"], carried["search_log"]["target"]
    assert target_log["ok"] and target_log["head_hash"] == data_folder["head"].head_hash == source_log["head_hash"]
    assert target_log["records"] == source_log["records"] >= 6 and target_log["checkpoints_checked"] >= 2
    assert (host / "review.key").read_bytes() == (folder / "review.key").read_bytes()
    assert (host / "review.key").stat().st_mode & 0o077 == 0
    assert "copied" in carried["review_key"] and "console.db" in carried["not_carried"]
    assert "the search log verifies on PostgreSQL" in moved.stderr

    # The policy floor and the moratorium hold on PostgreSQL, through the guard a server runs.
    store = PostgresStore(url, pool_size=1)
    state = AccountabilityState(host, database=url, pool_size=1)
    try:
        assert state.tags("ps") == {POLICY_TAG: "public-safety", RETENTION_TAGS["probes"]: "7"}
        guard = GuardedService(RekognitionService(None, store), state)  # type: ignore[arg-type]
        moratorium = data_folder["moratorium"]
        with pytest.raises(PolicyDenied, match=f"suspended: moratorium {moratorium.id} on collection ps"):
            guard.call(caller("ana", "operator", x_faceaudit_purpose="p", x_faceaudit_case="c"), "SearchFaces",
                       {"CollectionId": "ps", "FaceId": faces[0].face_id}, Facts())
        state.lift_moratorium(moratorium.id, "root")
        with pytest.raises(InvalidParameterException, match="floor of 99"):
            guard.call(caller("ana", "operator", x_faceaudit_purpose="p", x_faceaudit_case="c"),
                       "SearchFacesByImage", {"CollectionId": "ps", "Image": {"Bytes": b"\xff\xd8\xff probe"}},
                       Facts())
        # the budget step came along: 1 spent today, so a limit of 2 admits one more and refuses the next
        assert state.admit_search("ana", "public-safety", NOW, daily_limit=2, window_s=60, window_limit=None).admitted
        assert not state.admit_search("ana", "public-safety", NOW, daily_limit=2, window_s=60,
                                      window_limit=None).admitted
        # the identity counter is past the deleted moratorium 2: a new one is 3
        assert state.set_moratorium("policy", "public-safety", "new", "root").id == 3
    finally:
        state.close()
        store.close()

    # The review item opens on PostgreSQL with the copied key, and a second reviewer closes it.
    log = SearchLog(host, database=url)
    review = ReviewStore(host, recorder=log, database=url)
    try:
        seen = review.blind_view(key("rosa", "reviewer"), item)
        assert seen["Probe"] == b"probe bytes, sealed as they are"
        assert all(c["Crop"] for c in seen["Candidates"]) and len(seen["Candidates"]) == 2
        decided = review.decide(caller("rosa", "reviewer"), item, [
            {"CandidateId": f.face_id, "Decision": "confirm", "Reason": "same scar"} for f in faces[:2]])
        assert decided["State"] == "RELEASED"
        another = review.open_item(caller("ana", "operator"), "ps", "public-safety", b"another probe",
                                   {"FaceMatches": [{"Face": {"FaceId": faces[2].face_id}, "Similarity": 99.2}]},
                                   Facts())
        assert another != item and len(review.pending(key("rita", "reviewer"))["ReviewItems"]) == 1
        # The log: the same chain verifies in PostgreSQL, and the next records chain on from its head.
        before = log.verify()
        assert before.ok and before.records == data_folder["head"].records + 1  # rosa's decision
    finally:
        review.close()
        log.close()
    after = read_data_dir(host, url).verify()  # close() signed a checkpoint with the new host's key
    assert after.ok and after.checkpoints == before.checkpoints + 1 and after.head_hash == before.head_hash
    contents = read_data_dir(host, url)
    assert contents.records()[data_folder["head"].head_seq - 1]["hash"] == data_folder["head"].head_hash

    # The folder was only read: its log and its state are as they were.
    assert read_data_dir(folder).verify().head_hash == data_folder["head"].head_hash
    with AccountabilityState(folder) as kept:
        assert [m.active for m in kept.moratoria()] == [True]


def test_a_target_holding_accountability_rows_is_refused_before_anything_is_written(data_folder, database):
    url = database()
    with AccountabilityState(data_folder["dir"] / "elsewhere", database=url) as other:
        other.set_moratorium("policy", "personal", "someone else's", "root")
    refused = cli("storage", "migrate", "--data-dir", data_folder["dir"], "--database", url, "--quiet", expect=2)
    assert "accountability tables already hold rows (moratoria: 1)" in refused.stderr
    store = PostgresStore(url, pool_size=1)
    try:
        assert store.list_collections_detailed(None)[0] == []  # no face was copied either
    finally:
        store.close()


def test_every_table_of_every_store_in_a_data_folder_is_carried_or_said_not_to_be(data_folder):
    """A new table (or store file) must be added to CARRIED, or to NOT_CARRIED with why."""
    SessionStore(data_folder["dir"]).close()
    unhandled = []
    for path in sorted(data_folder["dir"].glob("*.db")):
        if path.name in FACES_AND_KEYS or path.name in NOT_CARRIED_FILES:
            continue
        assert path.name in CARRIED, f"{path.name}: a store file the migration does not know"
        conn = sqlite3.connect(path)
        try:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        finally:
            conn.close()
        unhandled += [f"{path.name}:{t}" for t in tables if t not in CARRIED[path.name] and t not in NOT_CARRIED]
        assert set(CARRIED[path.name]) <= set(tables), path.name
    assert unhandled == []
    assert set(CARRIED) <= {p.name for p in data_folder["dir"].glob("*.db")}  # the fixture uses every store


def test_a_data_folder_written_to_during_the_migration_is_refused_and_nothing_is_carried(data_folder, database,
                                                                                          tmp_path):
    from faceaudit.batch.accountability_migration import AccountabilityRefused, copy_into, prepare

    url = database()
    prepared = prepare(data_folder["dir"], url, tmp_path / "host")
    log = SearchLog(data_folder["dir"])  # a server still running on the folder
    log.append({"kind": "request", "operation": "SearchFaces", "collection": "ps", "status": 200})
    log.close()
    with pytest.raises(AccountabilityRefused, match="is a server still running on the data folder"):
        copy_into(prepared)
    with AccountabilityState(tmp_path / "host", database=url) as state:
        assert state.moratoria() == [] and state.tags("ps") == {}  # the transaction was rolled back whole
    assert read_data_dir(tmp_path / "host", url).verify().records == 0


def test_a_log_that_does_not_list_its_own_signing_key_gets_it_listed(data_folder, database, tmp_path):
    """The checkpoints name the folder's key; a log not opened since the keys table came would leave
    them unverifiable in PostgreSQL, where the folder's key file is not."""
    from faceaudit.batch.accountability_migration import carry, prepare

    conn = sqlite3.connect(data_folder["dir"] / "searchlog.db", isolation_level=None)
    conn.execute("DELETE FROM searchlog_keys")
    conn.close()
    url = database()
    carried = carry(prepare(data_folder["dir"], url, tmp_path / "host"))
    assert carried.problems == [] and carried.signing_key_added == data_folder["head"].key_id
    assert carried.search_log["target"]["ok"] and carried.search_log["target"]["checkpoints_checked"] >= 2


def test_a_target_data_directory_with_another_review_key_is_refused(data_folder, database, tmp_path):
    import os

    host = tmp_path / "host"
    host.mkdir(mode=0o700)
    fd = os.open(host / "review.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    from faceaudit.batch.accountability_migration import AccountabilityRefused, prepare

    with pytest.raises(AccountabilityRefused, match=r"is another key than .* which seals the review pictures"):
        prepare(data_folder["dir"], database(), host)


def test_a_table_this_faceaudit_does_not_know_refuses_the_migration(data_folder, database):
    conn = sqlite3.connect(data_folder["dir"] / "review.db", isolation_level=None)
    conn.execute("CREATE TABLE review_escalations (item_id TEXT, escalated_to TEXT)")
    conn.close()
    from faceaudit.batch.accountability_migration import AccountabilityRefused, prepare

    with pytest.raises(AccountabilityRefused, match=r"table\(s\) review_escalations that this faceaudit does not know"):
        prepare(data_folder["dir"], database())  # (the command calls it before copying any face)


def test_a_folder_without_accountability_files_migrates_its_faces_alone(tmp_path, database):
    folder = tmp_path / "faces-only"
    store = EmbeddedStore(folder)
    store.create_collection("c", "1.0")
    store.add_faces("c", [face(0)])
    store.close()
    SQLiteKeyStore(folder).close()
    moved = cli("storage", "migrate", "--data-dir", folder, "--database", database(), "--quiet")
    summary = json.loads(moved.stdout)
    assert summary["ok"] and summary["collections"]["c"]["faces"] == 1
    assert summary["accountability"]["tables"] == {} and summary["accountability"]["search_log"] == {}
    assert "0 accountability rows in 0 tables" in moved.stderr
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".db") == ["access.db", "faceaudit.db"]
