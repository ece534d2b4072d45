"""ReviewStore and SealedBlobs on a real data directory: the blind flow, the release rule, purging, files at rest.

Each runs on both databases (the ``database`` fixture, tests/accountability/conftest.py): the
SQLite file and sealed files of the data directory, or tables and ``bytea`` rows in PostgreSQL.
"""

from __future__ import annotations

import io
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from faceaudit.access import AccessKey
from faceaudit.accountability.context import CASE_HEADER, PURPOSE_HEADER, Caller, Facts
from faceaudit.accountability.review import LEAD_LABEL, ReviewStore
from faceaudit.accountability.sealed import SealedBlobError, SealedBlobs
from faceaudit.errors import (
    AccessDeniedException,
    ConflictException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceNotFoundException,
)
from support.images import encode

COLLECTION = "suspects"


class ListRecorder:
    """The Recorder protocol over a list (the search log stands in for it after the merge)."""

    def __init__(self, fail: bool = False):
        self.records: list[dict] = []
        self.fail = fail

    def append(self, record):
        if self.fail:
            raise OSError("log unavailable")
        stored = {**record, "seq": len(self.records) + 1}
        self.records.append(stored)
        return stored


def key(name: str, role: str) -> AccessKey:
    return AccessKey(f"AK{uuid.uuid4().hex[:18].upper()}", name, role, "unit-1", datetime.now(UTC), "created")


def caller(of: AccessKey, at: datetime | None = None) -> Caller:
    return Caller(of, str(uuid.uuid4()), at or datetime.now(UTC),
                  {PURPOSE_HEADER: "burglary investigation", CASE_HEADER: "case-42"})


def photo(seed: int, size: int = 200) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(pixels)


BOX = {"Left": 0.25, "Top": 0.2, "Width": 0.4, "Height": 0.5}
OPERATOR, ALICE, BOB, CAROL = key("op", "operator"), key("alice", "reviewer"), key("bob", "reviewer"), \
    key("carol", "reviewer")


@pytest.fixture
def recorder():
    return ListRecorder()


@pytest.fixture
def store(tmp_path, recorder, database):
    with ReviewStore(tmp_path / "data", recorder, database=database) as opened:
        yield opened


def index_faces(store: ReviewStore, n: int) -> list[str]:
    face_ids = [str(uuid.uuid4()) for _ in range(n)]
    for i, face_id in enumerate(face_ids):
        store.keep_face_crops(COLLECTION, photo(100 + i), [{"Face": {"FaceId": face_id, "BoundingBox": BOX}}])
    return face_ids


def search_response(face_ids: list[str], similarities: list[float]) -> dict:
    return {"FaceMatches": [{"Similarity": s, "Face": {"FaceId": f, "BoundingBox": BOX}}
                            for f, s in zip(face_ids, similarities)]}


def open_item(store: ReviewStore, face_ids: list[str], similarities: list[float],
              probe: bytes | None = None, at: datetime | None = None, collection: str = COLLECTION) -> str:
    facts = Facts(operation="SearchFacesByImage")
    item = store.open_item(caller(OPERATOR, at), collection, "public-safety", probe or photo(1),
                           search_response(face_ids, similarities), facts)
    assert facts.review_item == item
    return item


def decide_all(store: ReviewStore, reviewer: AccessKey, item: str, decision: str | dict[str, str]) -> dict:
    view = store.blind_view(reviewer, item)
    choose = decision if isinstance(decision, dict) else {}
    return store.decide(caller(reviewer), item, [
        {"CandidateId": c["CandidateId"], "Decision": choose.get(c["CandidateId"], decision),
         "Reason": "ear shape and hairline compared"} for c in view["Candidates"]])


def all_keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


def test_public_safety_needs_two_reviewers_and_other_policies_none(store):
    assert store.requires_review("public-safety") == 2
    assert store.requires_review("personal") == 0 and store.requires_review(None) == 0


def test_the_blind_view_has_the_pictures_and_no_score_or_rank(store):
    faces = index_faces(store, 4)
    probe = photo(7)
    item = open_item(store, faces, [99.9, 99.5, 99.3, 99.1], probe=probe)
    view = store.blind_view(ALICE, item)
    assert view["Probe"] == probe
    assert {c["CandidateId"] for c in view["Candidates"]} == set(faces)
    assert not {"Similarity", "Rank", "Decisions", "Searcher"} & all_keys(view)
    for candidate in view["Candidates"]:
        crop = Image.open(io.BytesIO(candidate["Crop"]))
        assert crop.format == "JPEG" and 60 <= crop.width <= 200  # the box (80 px) with its margin
    listed = store.pending(ALICE)["ReviewItems"]
    assert [i["ItemId"] for i in listed] == [item]
    assert not {"Similarity", "Rank"} & all_keys(listed)


def test_each_reviewer_gets_a_stable_order_of_their_own(store):
    faces = index_faces(store, 8)
    item = open_item(store, faces, [99.9 - i * 0.1 for i in range(8)])
    orders = {}
    for reviewer in (ALICE, BOB, CAROL):
        first = [c["CandidateId"] for c in store.blind_view(reviewer, item)["Candidates"]]
        assert first == [c["CandidateId"] for c in store.blind_view(reviewer, item)["Candidates"]]
        orders[reviewer.name] = first
    # 8! orders: three reviewers (or one reviewer and the ranking) agreeing is a 1-in-40320 event each
    assert len({tuple(o) for o in orders.values()} | {tuple(faces)}) == 4


def test_the_searcher_and_non_reviewers_cannot_review(store):
    item = open_item(store, index_faces(store, 1), [99.5])
    own = key("op", "reviewer")  # a reviewer key under the searcher's name is the same person
    for who in (OPERATOR, own):
        with pytest.raises(AccessDeniedException):
            store.blind_view(who, item)
    same_key = AccessKey(OPERATOR.access_key_id, "op-reviewer", "reviewer", None, OPERATOR.created, "created")
    with pytest.raises(AccessDeniedException, match="your own search"):
        store.blind_view(same_key, item)
    with pytest.raises(AccessDeniedException):
        store.pending(OPERATOR)
    assert store.pending(same_key)["ReviewItems"] == [] and store.pending(own)["ReviewItems"] == []
    with pytest.raises(ResourceNotFoundException):
        store.blind_view(ALICE, str(uuid.uuid4()))


def test_two_confirmations_release_the_candidate_labelled_with_its_score(store, recorder):
    faces = index_faces(store, 2)
    item = open_item(store, faces, [99.2, 99.6])
    assert store.result(OPERATOR, item)["ReleasedCandidates"] == []
    first = decide_all(store, ALICE, item, {faces[0]: "reject", faces[1]: "confirm"})
    assert first["State"] == "OPEN"
    assert {(c["CandidateId"], c["Similarity"], c["Rank"]) for c in first["Revealed"]} == \
        {(faces[1], 99.6, 1), (faces[0], 99.2, 2)}  # the scores come only with the decision
    with pytest.raises(AccessDeniedException, match="already decided"):
        store.blind_view(ALICE, item)
    assert store.pending(ALICE)["ReviewItems"] == [] and len(store.pending(BOB)["ReviewItems"]) == 1
    assert store.result(OPERATOR, item)["ReleasedCandidates"] == []  # one reviewer is not enough
    second = decide_all(store, BOB, item, {faces[0]: "reject", faces[1]: "confirm"})
    assert second["State"] == "RELEASED"
    result = store.result(OPERATOR, item)
    assert result["ReleasedCandidates"] == [
        {"CandidateId": faces[1], "CandidateType": "FACE", "Similarity": 99.6, "Label": LEAD_LABEL}]
    with pytest.raises(ConflictException):
        store.blind_view(CAROL, item)
    with pytest.raises(AccessDeniedException):
        store.result(ALICE, item)
    assert [r["kind"] for r in recorder.records] == ["review", "review"]
    last = recorder.records[-1]
    assert last["key"]["name"] == "bob" and last["review"] == {"item": item, "outcome": "released"}
    assert last["details"]["released"] == [faces[1]]
    assert {d["FaceId"]: d["decision"] for d in last["details"]["decisions"]} == \
        {faces[0]: "reject", faces[1]: "confirm"}
    assert last["purpose"] == "burglary investigation" and last["case"] == "case-42"


def test_disagreement_releases_nothing_and_marks_the_item_disputed(store, recorder):
    faces = index_faces(store, 1)
    item = open_item(store, faces, [99.4])
    decide_all(store, ALICE, item, "confirm")
    assert decide_all(store, BOB, item, "inconclusive")["State"] == "DISPUTED"
    result = store.result(OPERATOR, item)
    assert result["State"] == "DISPUTED" and result["ReleasedCandidates"] == []
    unanimous = open_item(store, faces, [99.4])
    decide_all(store, ALICE, unanimous, "reject")
    assert decide_all(store, BOB, unanimous, "reject")["State"] == "NOT_CONFIRMED"


def test_a_decision_must_cover_every_candidate_with_a_reason(store):
    faces = index_faces(store, 2)
    item = open_item(store, faces, [99.2, 99.6])
    bad = [
        [{"CandidateId": faces[0], "Decision": "confirm", "Reason": "same"}],  # one missing
        [{"CandidateId": f, "Decision": "confirm", "Reason": " "} for f in faces],  # no reason
        [{"CandidateId": f, "Decision": "maybe", "Reason": "r"} for f in faces],
        [{"CandidateId": f, "Decision": "confirm", "Reason": "r"} for f in [*faces, faces[0]]],
        [{"CandidateId": str(uuid.uuid4()), "Decision": "confirm", "Reason": "r"}],
    ]
    for decisions in bad:
        with pytest.raises(InvalidParameterException):
            store.decide(caller(ALICE), item, decisions)
    assert len(store.pending(ALICE)["ReviewItems"]) == 1  # nothing was stored


def blobs(store: ReviewStore) -> int:
    """How many sealed pictures the store keeps (files, or rows in PostgreSQL)."""
    return len(store.blobs.blob_ids())


def test_a_decision_the_log_refuses_is_not_stored(tmp_path, database):
    with ReviewStore(tmp_path / "data", ListRecorder(fail=True), database=database) as store:
        item = open_item(store, index_faces(store, 1), [99.5])
        with pytest.raises(OSError):
            decide_all(store, ALICE, item, "confirm")
        assert [i["ItemId"] for i in store.pending(ALICE)["ReviewItems"]] == [item]


def test_files_at_rest_are_private_and_hold_no_picture_in_clear(store, tmp_path, database, raw_sql):
    probe = photo(3)
    faces = index_faces(store, 2)
    item = open_item(store, faces, [99.1, 99.2], probe=probe)
    crops = [c["Crop"] for c in store.blind_view(ALICE, item)["Candidates"]]
    data = tmp_path / "data"
    if database is None:
        assert stat.S_IMODE(os.stat(data / "sealed").st_mode) == 0o700
        private = [data / "review.key", data / "review.db", *(data / "sealed").iterdir()]
        assert len(private) == 2 + 1 + 2  # key, db, the probe and the collection's 2 crops
    else:  # the pictures are rows in the database; only the key is a file
        private = [data / "review.key"]
        assert sorted(p.name for p in data.iterdir()) == ["review.key"] and blobs(store) == 1 + 2
    for path in private:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    on_disk = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    if database is not None:  # every byte string the review tables hold
        on_disk += b"".join(bytes(row[0]) for row in raw_sql(data, "", "SELECT sealed FROM review_blobs"))
        on_disk += b"".join(bytes(row[0]) for row in raw_sql(data, "", "SELECT value FROM review_meta"))
        on_disk += b"".join(bytes(row[0]) for row in raw_sql(data, "", "SELECT shuffle_seed FROM items"))
    for picture in (probe, *crops):
        assert picture[:2] == b"\xff\xd8"
        for start in range(0, len(picture) - 32, 997):  # no 32-byte run of any picture anywhere on disk
            assert picture[start:start + 32] not in on_disk


def test_purging_an_expired_item_removes_its_rows_and_files(store, tmp_path):
    faces = index_faces(store, 2)
    now = datetime.now(UTC)
    old = open_item(store, faces, [99.1, 99.2], at=now - timedelta(days=31))
    fresh = open_item(store, faces, [99.1, 99.2], at=now - timedelta(days=1))
    assert blobs(store) == 2 + 1 + 1  # the collection's crops and each item's probe
    day = 86_400_000
    now_ms = int(now.timestamp() * 1000)
    seen: list[tuple[list[str], list[str]]] = []
    assert store.purge_before({COLLECTION: (now_ms - 30 * day, -1)}, lambda i, p: seen.append((i, p))) == ([old], [])
    assert seen == [([old], [])]  # told inside the transaction, once
    assert blobs(store) == 2 + 1  # the old item's probe is gone, the faces' crops stay
    with pytest.raises(ResourceNotFoundException):
        store.result(OPERATOR, old)
    # A probe can go before its item: the item stays, without the picture, and cannot be confirmed.
    assert store.purge_before({COLLECTION: (now_ms - 30 * day, now_ms - 1)}) == ([], [fresh])
    assert blobs(store) == 2 and store.result(OPERATOR, fresh)["State"] == "OPEN"
    assert store.blind_view(ALICE, fresh)["Probe"] is None
    assert store.purge_before({COLLECTION: (now_ms - 30 * day, now_ms - 1)}) == ([], [])
    assert store.collections_with_items() == [COLLECTION]


def test_a_purge_whose_record_is_refused_is_undone(store, tmp_path):
    faces = index_faces(store, 1)
    item = open_item(store, faces, [99.5], at=datetime.now(UTC) - timedelta(days=40))

    def refuse(items, probes):
        raise OSError("log unavailable")

    with pytest.raises(OSError):
        store.purge_before({COLLECTION: (int(datetime.now(UTC).timestamp() * 1000), -1)}, refuse)
    assert store.result(OPERATOR, item)["State"] == "OPEN" and store.blind_view(ALICE, item)["Probe"] is not None


def test_deleted_faces_and_collections_take_their_pictures_with_them(store, tmp_path):
    faces = index_faces(store, 2)
    item = open_item(store, faces, [99.1, 99.2])
    store.forget_faces(COLLECTION, [faces[0]])
    assert blobs(store) == 1 + 1  # faces[1]'s crop and the probe
    crops = {c["CandidateId"]: c["Crop"] for c in store.blind_view(ALICE, item)["Candidates"]}
    assert crops[faces[0]] is None and crops[faces[1]] is not None
    with pytest.raises(InvalidParameterException, match="cannot be confirmed"):  # nothing is confirmed unseen
        decide_all(store, ALICE, item, "confirm")
    assert decide_all(store, ALICE, item, {faces[0]: "inconclusive", faces[1]: "confirm"})["State"] == "OPEN"
    other = open_item(store, [], [], collection="elsewhere")
    store.forget_collection(COLLECTION)
    assert blobs(store) == 1  # only the other collection's probe
    with pytest.raises(ResourceNotFoundException):
        store.blind_view(ALICE, item)
    assert store.result(OPERATOR, other)["CandidateCount"] == 0


def test_search_faces_without_a_probe_image_uses_the_searched_face(store):
    faces = index_faces(store, 2)
    response = {"SearchedFaceId": faces[0], **search_response(faces[1:], [99.3])}
    item = store.open_item(caller(OPERATOR), COLLECTION, "public-safety", b"", response,
                           Facts(operation="SearchFaces"))
    view = store.blind_view(ALICE, item)
    assert view["Probe"] is not None and view["Probe"][:2] == b"\xff\xd8"


def test_items_survive_a_reopened_store(tmp_path, database):
    with ReviewStore(tmp_path / "data", database=database) as store:
        item = open_item(store, index_faces(store, 1), [99.5])
        decide_all(store, ALICE, item, "confirm")
    with ReviewStore(tmp_path / "data", database=database) as store:
        assert decide_all(store, BOB, item, "confirm")["State"] == "RELEASED"
        assert store.result(OPERATOR, item)["State"] == "RELEASED"


def test_sealed_blobs_refuse_altered_swapped_and_foreign_files(tmp_path):
    blobs = SealedBlobs(tmp_path / "d")
    a, b = blobs.seal(b"first picture"), blobs.seal(b"second picture")
    assert blobs.open(a) == b"first picture"
    raw = bytearray((blobs.blob_dir / a).read_bytes())
    raw[-1] ^= 1
    (blobs.blob_dir / a).write_bytes(bytes(raw))
    with pytest.raises(SealedBlobError, match="altered"):
        blobs.open(a)
    (blobs.blob_dir / a).write_bytes((blobs.blob_dir / b).read_bytes())  # b's ciphertext under a's name
    with pytest.raises(SealedBlobError):
        blobs.open(a)
    other = SealedBlobs(tmp_path / "other")
    (other.blob_dir / b).write_bytes((blobs.blob_dir / b).read_bytes())
    with pytest.raises(SealedBlobError):
        other.open(b)
    with pytest.raises(SealedBlobError):
        blobs.open("../review.key")
    assert SealedBlobs(tmp_path / "d").open(b) == b"second picture"  # the key is kept, not regenerated
    os.chmod(blobs.key_path, 0o644)
    with pytest.raises(SealedBlobError, match="other users"):
        SealedBlobs(tmp_path / "d")
    os.chmod(blobs.key_path, 0o600)
    saved = blobs.key_path.read_bytes()
    blobs.key_path.unlink()  # a lost key is not replaced while blobs sealed with it remain
    with pytest.raises(SealedBlobError, match="restore the key"):
        SealedBlobs(tmp_path / "d")
    blobs.key_path.write_bytes(saved)
    os.chmod(blobs.key_path, 0o600)
    assert SealedBlobs(tmp_path / "d").open(b) == b"second picture"
    blobs.destroy_key()  # crypto-shredding: key and blobs go together, and a fresh start works
    assert SealedBlobs(tmp_path / "d").blob_ids() == []


def test_an_orphaned_blob_is_swept(store, tmp_path):
    open_item(store, index_faces(store, 1), [99.5])
    orphan = store.blobs.seal(b"left by a killed process")
    assert store.sweep_orphans() == 0 and store.blobs.exists(orphan)  # young: maybe a row is on its way
    assert store.sweep_orphans(older_than_s=0) == 1 and not store.blobs.exists(orphan)
    assert blobs(store) == 2  # the crop and the probe


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_hosts_share_the_pictures_under_one_sealing_key_kept_out_of_the_database(tmp_path, database, raw_sql):
    with ReviewStore(tmp_path / "a", database=database) as first:
        item = open_item(first, index_faces(first, 1), [99.5])
        with pytest.raises(SealedBlobError, match=r"copy review\.key"):  # a second host without the key
            ReviewStore(tmp_path / "b", database=database)
        (tmp_path / "c").mkdir(mode=0o700)
        (tmp_path / "c" / "review.key").write_bytes(os.urandom(32))
        os.chmod(tmp_path / "c" / "review.key", 0o600)
        with pytest.raises(SealedBlobError, match="not the key"):  # ... or with another one
            ReviewStore(tmp_path / "c", database=database)
        (tmp_path / "b").mkdir(mode=0o700, exist_ok=True)
        (tmp_path / "b" / "review.key").write_bytes((tmp_path / "a" / "review.key").read_bytes())
        os.chmod(tmp_path / "b" / "review.key", 0o600)
        with ReviewStore(tmp_path / "b", database=database) as second:  # the copied key: one queue, one set of pictures
            assert [i["ItemId"] for i in second.pending(ALICE)["ReviewItems"]] == [item]
            assert second.blind_view(ALICE, item)["Candidates"][0]["Crop"][:2] == b"\xff\xd8"
            decide_all(second, ALICE, item, "confirm")
        assert decide_all(first, BOB, item, "confirm")["State"] == "RELEASED"
        key = (tmp_path / "a" / "review.key").read_bytes()
        assert all(key not in bytes(row[0]) for row in raw_sql(tmp_path, "", "SELECT value FROM review_meta"))
        (blob_id, sealed), = raw_sql(tmp_path, "", "SELECT blob_id, sealed FROM review_blobs WHERE blob_id IN "
                                     "(SELECT probe_blob FROM items)")
        altered = bytearray(bytes(sealed))
        altered[-1] ^= 1
        raw_sql(tmp_path, "", "UPDATE review_blobs SET sealed = ? WHERE blob_id = ?", (bytes(altered), blob_id))
        with pytest.raises(SealedBlobError, match="altered"):
            first.blobs.open(blob_id)


def test_concurrent_reviewers_close_an_item_exactly_once(tmp_path, database):
    from concurrent.futures import ThreadPoolExecutor

    recorder = ListRecorder()
    with ReviewStore(tmp_path / "data", recorder, database=database) as store:
        faces = index_faces(store, 2)
        item = open_item(store, faces, [99.3, 99.8])
        reviewers = [key(f"r{i}", "reviewer") for i in range(6)]
        views = {r.name: store.blind_view(r, item) for r in reviewers}  # all looked while it was open

        def decide(reviewer):
            try:
                return store.decide(caller(reviewer), item, [
                    {"CandidateId": c["CandidateId"], "Decision": "confirm", "Reason": "same"}
                    for c in views[reviewer.name]["Candidates"]])["State"]
            except ConflictException:
                return "conflict"

        with ThreadPoolExecutor(6) as pool:
            states = sorted(pool.map(decide, reviewers))
        assert states == ["OPEN", "RELEASED", "conflict", "conflict", "conflict", "conflict"]
        assert len(recorder.records) == 2 and store.result(OPERATOR, item)["DecisionCount"] == 2


def test_a_search_without_candidates_opens_closed(store):
    facts = Facts(operation="SearchFacesByImage")
    item = store.open_item(caller(OPERATOR), COLLECTION, "public-safety", photo(5), {"FaceMatches": []}, facts)
    assert facts.review_outcome == "not-confirmed"
    assert store.pending(ALICE)["ReviewItems"] == []
    assert store.result(OPERATOR, item) | {"ItemId": None} == {
        "ItemId": None, "CollectionId": COLLECTION, "State": "NOT_CONFIRMED", "RequiredReviewers": 2,
        "DecisionCount": 0, "CandidateCount": 0, "ReleasedCandidates": []}


def test_a_face_whose_box_lies_outside_the_picture_gets_no_crop_and_breaks_nothing(store):
    good, outside = str(uuid.uuid4()), str(uuid.uuid4())
    store.keep_face_crops(COLLECTION, photo(11), [
        {"Face": {"FaceId": outside, "BoundingBox": {"Left": 1.5, "Top": 1.5, "Width": 0.2, "Height": 0.2}}},
        {"Face": {"FaceId": good, "BoundingBox": BOX}}])
    item = open_item(store, [good, outside], [99.5, 99.4])
    crops = {c["CandidateId"]: c["Crop"] for c in store.blind_view(ALICE, item)["Candidates"]}
    assert crops[outside] is None and crops[good][:2] == b"\xff\xd8"


def test_the_wire_service_tells_the_log_which_item_and_what_became_of_it(store):
    from faceaudit.accountability.faceaudit_service import FaceAuditService

    service = FaceAuditService(store)
    item = open_item(store, index_faces(store, 1), [99.5])
    view = service.call(caller(ALICE), "GetReviewItem", {"ItemId": item})
    facts = Facts()
    answer = service.call(caller(ALICE), "DecideReviewItem", {"ItemId": item, "Decisions": [
        {"CandidateId": view["Candidates"][0]["CandidateId"], "Decision": "CONFIRM", "Reason": "same"}]}, facts)
    assert answer["State"] == "OPEN"
    assert (facts.operation, facts.review_item, facts.review_outcome, facts.collection) == (
        "DecideReviewItem", item, "open", COLLECTION)
    with pytest.raises(InvalidParameterException, match="not supported"):
        service.call(caller(ALICE), "DeleteReviewItem", {"ItemId": item})


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_review_db_of_schema_1_is_upgraded_and_keeps_its_items(tmp_path, raw_sql):
    with ReviewStore(tmp_path / "data") as store:
        item = open_item(store, index_faces(store, 1), [99.5])
    raw_sql(tmp_path / "data", "review.db", "DROP INDEX items_searcher")  # as version 1 left it
    raw_sql(tmp_path / "data", "review.db", "ALTER TABLE review_meta RENAME TO meta")
    raw_sql(tmp_path / "data", "review.db", "UPDATE schema_version SET version = 1")
    with ReviewStore(tmp_path / "data") as store:
        assert [i["ItemId"] for i in store.pending(ALICE)["ReviewItems"]] == [item]
        assert [i["ItemId"] for i in store.held_searches(OPERATOR)["ReviewResults"]] == [item]
    assert raw_sql(tmp_path / "data", "review.db", "SELECT version FROM schema_version") == [(3,)]
    assert raw_sql(tmp_path / "data", "review.db",
                   "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'items_searcher'")


def test_a_searcher_lists_its_own_held_searches_newest_first_without_candidates(store, tmp_path, database, raw_sql):
    mine = [open_item(store, index_faces(store, 2), [99.4, 99.1]) for _ in range(3)]
    other = key("someone-else", "operator")
    theirs = store.open_item(caller(other), COLLECTION, "public-safety", photo(5),
                             search_response(index_faces(store, 1), [99.0]), Facts(operation="SearchFacesByImage"))
    first = store.held_searches(OPERATOR, max_results=2)
    assert [i["ItemId"] for i in first["ReviewResults"]] == mine[:0:-1]
    assert {name for item in first["ReviewResults"] for name in item} == {
        "ItemId", "CreatedAt", "CollectionId", "Policy", "Purpose", "Case", "State", "RequiredReviewers",
        "DecisionCount"}
    rest = store.held_searches(OPERATOR, max_results=2, next_token=first["NextToken"])
    assert [i["ItemId"] for i in rest["ReviewResults"]] == mine[:1] and "NextToken" not in rest
    assert [i["ItemId"] for i in store.held_searches(other)["ReviewResults"]] == [theirs]
    with pytest.raises(InvalidPaginationTokenException):  # the token names its key's listing
        store.held_searches(other, next_token=first["NextToken"])
    decide_all(store, ALICE, mine[0], "reject")
    decide_all(store, BOB, mine[0], "reject")
    assert [(i["State"], i["DecisionCount"]) for i in rest["ReviewResults"]] == [("OPEN", 0)]
    assert [(i["State"], i["DecisionCount"]) for i in store.held_searches(OPERATOR)["ReviewResults"]][-1] == \
        ("NOT_CONFIRMED", 2)
    if database is None:  # the listing reads the searcher's rows through its index, not every item
        plan = raw_sql(tmp_path / "data", "review.db", "EXPLAIN QUERY PLAN SELECT seq FROM items WHERE "
                       "searcher_name = 'x' AND seq < 5 ORDER BY seq DESC LIMIT 3")
        assert "items_searcher" in str(plan) and "TEMP B-TREE" not in str(plan)
    else:
        assert raw_sql(tmp_path, "", "SELECT 1 FROM pg_indexes WHERE indexname = 'items_searcher' "
                       "AND schemaname = current_schema()")
