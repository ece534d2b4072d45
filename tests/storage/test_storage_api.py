"""Every FaceStore method's round trip and Rekognition's error for every misuse, on both backends
(``store`` / ``open_store``, tests/storage/conftest.py); the tests about the SQLite files
(modes, pragmas, the schema_version row) are the embedded store's alone."""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from storage_helpers import DIM, make_face, make_faces, table_rows, unit_vectors

from faceaudit.errors import (
    InternalServerError,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    _ClientError,
)
from faceaudit.storage import (
    AssociationResult,
    ConflictException,
    EmbeddedStore,
    FaceStore,
    InvalidPaginationTokenException,
    ServiceQuotaExceededException,
    StoredFace,
    UnsuccessfulFace,
    User,
)
from faceaudit.storage.embedded import DB_FILENAME, SCHEMA_VERSION


@pytest.fixture
def store(open_store):
    return open_store()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def new_id() -> str:
    return str(uuid.uuid4())


# --- set-up and files -------------------------------------------------------------

def test_is_a_face_store(store):
    assert isinstance(store, FaceStore)


def test_data_dir_created_private_with_wal_and_schema_version(tmp_path):
    data_dir = tmp_path / "nested" / "data"
    s = EmbeddedStore(data_dir)
    s.create_collection("c", "m1")
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data_dir / DB_FILENAME).st_mode) == 0o600
    s.close()
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()


def test_existing_data_dir_permissions_left_alone(tmp_path):
    tmp_path.joinpath("d").mkdir(mode=0o755)
    os.chmod(tmp_path / "d", 0o755)
    EmbeddedStore(tmp_path / "d").close()
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755


def test_pragmas_per_connection(tmp_path):
    s = EmbeddedStore(tmp_path, synchronous="FULL")
    conn = s._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    s.close()
    s = EmbeddedStore(tmp_path, synchronous="normal", busy_timeout=5)
    conn = s._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    s.close()
    with pytest.raises(ValueError):
        EmbeddedStore(tmp_path, synchronous="OFF")


def test_newer_schema_version_refused(tmp_path):
    EmbeddedStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="schema version"):
        EmbeddedStore(tmp_path)


def test_everything_survives_reopening(open_store, rng):
    s = open_store()
    s.create_collection("c", "m1")
    faces = make_faces(rng, 5)
    s.add_faces("c", faces)
    s.create_user("c", "alice")
    s.associate_faces("c", "alice", [faces[0].face_id])
    s.close()
    with pytest.raises(InternalServerError, match="closed"):
        s.describe_collection("c")
    s = open_store()
    assert s.describe_collection("c").face_count == 5
    assert s.describe_collection("c").user_count == 1
    listed, _ = s.list_faces("c")
    assert listed[0] == StoredFace(**{**faces[0].__dict__, "user_id": "alice"})
    assert listed[1:] == faces[1:]
    assert s.search("c", faces[2].vector, 1)[0][0].face_id == faces[2].face_id
    s.close()


def test_error_classes_are_rekognition_client_errors():
    for cls, code in [(ConflictException, "ConflictException"),
                      (InvalidPaginationTokenException, "InvalidPaginationTokenException"),
                      (ServiceQuotaExceededException, "ServiceQuotaExceededException")]:
        err = cls("x")
        assert isinstance(err, _ClientError)
        assert err.code == code and err.http_status == 400
        assert err.to_dict() == {"Code": code, "Message": "x"}


# --- collections ----------------------------------------------------------------

def test_collection_round_trip(store):
    before = datetime.now(UTC).replace(microsecond=0)
    created = store.create_collection("my.Coll-1_x", "dlib-19.24")
    assert created.collection_id == "my.Coll-1_x"
    assert created.arn == "arn:aws:rekognition:us-east-1:000000000000:collection/my.Coll-1_x"
    assert created.face_model_version == "dlib-19.24"
    assert created.face_count == 0 and created.user_count == 0
    assert created.created.tzinfo is not None and created.created >= before
    assert store.describe_collection("my.Coll-1_x") == created
    assert store.list_collections() == (["my.Coll-1_x"], None)
    store.delete_collection("my.Coll-1_x")
    assert store.list_collections() == ([], None)


def test_arn_uses_region_and_account(open_store):
    s = open_store(region="eu-west-1", account_id="123456789012")
    assert s.create_collection("c", "m").arn == "arn:aws:rekognition:eu-west-1:123456789012:collection/c"
    s.close()


def test_collection_ids_case_sensitive(store):
    store.create_collection("abc", "m")
    store.create_collection("ABC", "m")
    assert sorted(store.list_collections()[0]) == ["ABC", "abc"]


def test_create_existing_collection(store):
    store.create_collection("c", "m")
    with pytest.raises(ResourceAlreadyExistsException):
        store.create_collection("c", "m")


@pytest.mark.parametrize("bad", ["", "a" * 256, "has space", "slash/no", "é", "a:b", None, 5])
def test_invalid_collection_ids(store, bad):
    for call in (lambda: store.create_collection(bad, "m"),
                 lambda: store.describe_collection(bad),
                 lambda: store.delete_collection(bad),
                 lambda: store.list_faces(bad),
                 lambda: store.add_faces(bad, []),
                 lambda: store.search(bad, np.zeros(DIM), 1),
                 lambda: store.create_user(bad, "u")):
        with pytest.raises(InvalidParameterException):
            call()


def test_longest_collection_id_allowed(store):
    store.create_collection("a" * 255, "m")
    assert store.describe_collection("a" * 255).collection_id == "a" * 255


def test_missing_collection_everywhere(store, rng):
    face = make_faces(rng, 1)[0]
    calls = [
        lambda: store.describe_collection("nope"),
        lambda: store.delete_collection("nope"),
        lambda: store.add_faces("nope", [face]),
        lambda: store.add_faces("nope", []),
        lambda: store.list_faces("nope"),
        lambda: store.get_faces("nope", [face.face_id]),
        lambda: store.delete_faces("nope", [face.face_id]),
        lambda: store.search("nope", face.vector, 1),
        lambda: store.search_users("nope", face.vector, 1),
        lambda: store.create_user("nope", "u"),
        lambda: store.get_user("nope", "u"),
        lambda: store.delete_user("nope", "u"),
        lambda: store.list_users("nope"),
        lambda: store.associate_faces("nope", "u", [face.face_id]),
        lambda: store.disassociate_faces("nope", "u", [face.face_id]),
        lambda: store.index_stats("nope"),
    ]
    for call in calls:
        with pytest.raises(ResourceNotFoundException):
            call()


def test_delete_collection_removes_faces_and_users(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 3)
    store.add_faces("c", faces)
    store.create_user("c", "u1")
    store.associate_faces("c", "u1", [faces[0].face_id])
    store.search("c", faces[0].vector, 1)  # index loaded
    store.delete_collection("c")
    with pytest.raises(ResourceNotFoundException):
        store.describe_collection("c")
    store.create_collection("c", "m")
    assert store.describe_collection("c").face_count == 0
    assert store.list_faces("c") == ([], None)
    assert store.list_users("c") == ([], None)
    assert store.search("c", faces[0].vector, 5) == []
    assert table_rows(store, "faces") == 0
    assert table_rows(store, "users") == 0


def test_invalid_face_model_version(store):
    with pytest.raises(InvalidParameterException):
        store.create_collection("c", "")


# --- faces ------------------------------------------------------------------------

def test_add_list_get_round_trip(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 4)
    faces[1] = make_face(faces[1].vector, external_image_id="photo:1.jpg", confidence=87.25)
    store.add_faces("c", faces)
    listed, token = store.list_faces("c")
    assert token is None
    assert listed == faces  # insertion order, every field, vector bit for bit
    assert listed[0].vector.dtype == np.float32 and listed[0].vector.shape == (DIM,)
    assert store.describe_collection("c").face_count == 4
    got = store.get_faces("c", [faces[3].face_id, new_id(), faces[0].face_id, faces[3].face_id])
    assert got == [faces[3], faces[0]]
    assert store.get_faces("c", []) == []


def test_add_faces_empty_list_is_a_no_op(store):
    store.create_collection("c", "m")
    store.add_faces("c", [])
    assert store.describe_collection("c").face_count == 0


def test_add_faces_is_all_or_nothing(store, rng):
    store.create_collection("c", "m")
    first = make_faces(rng, 2)
    store.add_faces("c", first)
    # a batch whose last face id already exists: nothing of it is stored
    batch = make_faces(rng, 3) + [make_face(unit_vectors(rng, 1)[0], face_id=first[0].face_id)]
    with pytest.raises(InvalidParameterException):
        store.add_faces("c", batch)
    assert store.describe_collection("c").face_count == 2
    assert [f.face_id for f in store.list_faces("c")[0]] == [f.face_id for f in first]
    assert store.get_faces("c", [batch[0].face_id]) == []
    # the same face id twice in one batch
    twin = make_faces(rng, 1)[0]
    with pytest.raises(InvalidParameterException):
        store.add_faces("c", [twin, twin])
    assert store.describe_collection("c").face_count == 2
    # the same face id in two collections is fine
    store.create_collection("d", "m")
    store.add_faces("d", [first[0]])


def test_add_faces_dimension_fixed_by_first_face(store, rng):
    store.create_collection("c", "m")
    store.add_faces("c", make_faces(rng, 1, dim=128))
    with pytest.raises(InvalidParameterException):
        store.add_faces("c", make_faces(rng, 1, dim=64))
    with pytest.raises(InvalidParameterException):
        store.add_faces("c", [make_face(np.ones(128)), make_face(np.ones(127))])
    assert store.describe_collection("c").face_count == 1
    with pytest.raises(InvalidParameterException):
        store.search("c", np.ones(64), 1)


@pytest.mark.parametrize("change", [
    {"face_id": "not-a-uuid"},
    {"face_id": str(uuid.uuid4()).upper()},
    {"image_id": "x"},
    {"external_image_id": "has space"},
    {"external_image_id": ""},
    {"external_image_id": "a" * 256},
    {"bounding_box": {"Width": 1.0}},
    {"bounding_box": {"Width": 1.0, "Height": 1.0, "Left": 0.0, "Top": float("nan")}},
    {"confidence": float("inf")},
    {"index_faces_model_version": ""},
    {"user_id": "alice"},
    {"vector": np.array([1.0, np.nan])},
    {"vector": np.ones((2, 2))},
    {"vector": np.array([])},
])
def test_add_faces_rejects_malformed_faces(store, rng, change):
    store.create_collection("c", "m")
    good = make_faces(rng, 1)[0]
    bad = StoredFace(**{**good.__dict__, **change})
    with pytest.raises(InvalidParameterException):
        store.add_faces("c", [good, bad])
    assert store.describe_collection("c").face_count == 0


def test_add_faces_collection_quota(open_store, rng):
    s = open_store(max_faces_per_collection=3)
    s.create_collection("c", "m")
    s.add_faces("c", make_faces(rng, 2))
    with pytest.raises(ServiceQuotaExceededException):
        s.add_faces("c", make_faces(rng, 2))
    s.add_faces("c", make_faces(rng, 1))
    assert s.describe_collection("c").face_count == 3
    s.close()


def test_delete_faces(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 4)
    store.add_faces("c", faces)
    store.create_user("c", "bob")
    store.associate_faces("c", "bob", [faces[2].face_id])
    missing = new_id()
    deleted, unsuccessful = store.delete_faces(
        "c", [faces[0].face_id, missing, faces[2].face_id, faces[1].face_id, faces[0].face_id])
    assert deleted == [faces[0].face_id, faces[1].face_id]
    assert unsuccessful == [
        UnsuccessfulFace(missing, ("FACE_NOT_FOUND",)),
        UnsuccessfulFace(faces[2].face_id, ("ASSOCIATED_TO_AN_EXISTING_USER",), user_id="bob"),
    ]
    assert store.describe_collection("c").face_count == 2
    assert [f.face_id for f in store.list_faces("c")[0]] == [faces[2].face_id, faces[3].face_id]
    # deleting again: not found
    assert store.delete_faces("c", [faces[0].face_id]) == (
        [], [UnsuccessfulFace(faces[0].face_id, ("FACE_NOT_FOUND",))])


@pytest.mark.parametrize("face_ids", [[], ["nope"], "a-string", [str(uuid.uuid4()) for _ in range(4097)]])
def test_delete_faces_invalid_lists(store, face_ids):
    store.create_collection("c", "m")
    with pytest.raises(InvalidParameterException):
        store.delete_faces("c", face_ids)


def test_get_faces_invalid_ids(store):
    store.create_collection("c", "m")
    with pytest.raises(InvalidParameterException):
        store.get_faces("c", ["not-a-face-id"])


# --- users --------------------------------------------------------------------------

def test_user_round_trip(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 3)
    store.add_faces("c", faces)
    assert store.create_user("c", "alice:1") == User("alice:1", "CREATED")
    assert store.create_user("c", "bob") == User("bob", "CREATED")
    assert store.describe_collection("c").user_count == 2
    assert store.list_users("c") == ([User("alice:1", "CREATED"), User("bob", "CREATED")], None)

    result = store.associate_faces("c", "alice:1", [faces[0].face_id, faces[1].face_id])
    assert result == AssociationResult([faces[0].face_id, faces[1].face_id], [], "ACTIVE")
    assert store.get_user("c", "alice:1") == User("alice:1", "ACTIVE")
    assert store.list_users("c")[0] == [User("alice:1", "ACTIVE"), User("bob", "CREATED")]
    by_user, _ = store.list_faces("c", user_id="alice:1")
    assert [f.face_id for f in by_user] == [faces[0].face_id, faces[1].face_id]
    assert all(f.user_id == "alice:1" for f in by_user)
    assert store.list_faces("c", user_id="bob") == ([], None)

    result = store.disassociate_faces("c", "alice:1", [faces[0].face_id])
    assert result == AssociationResult([faces[0].face_id], [], "ACTIVE")
    result = store.disassociate_faces("c", "alice:1", [faces[1].face_id])
    assert result == AssociationResult([faces[1].face_id], [], "CREATED")
    assert store.get_faces("c", [faces[1].face_id])[0].user_id is None

    store.delete_user("c", "bob")
    assert store.list_users("c")[0] == [User("alice:1", "CREATED")]
    assert store.describe_collection("c").user_count == 1


def test_create_existing_user_conflicts(store):
    store.create_collection("c", "m")
    store.create_user("c", "u")
    with pytest.raises(ConflictException):
        store.create_user("c", "u")
    store.create_collection("d", "m")
    store.create_user("d", "u")  # same id in another collection is fine


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "slash/", None])
def test_invalid_user_ids(store, bad):
    store.create_collection("c", "m")
    for call in (lambda: store.create_user("c", bad), lambda: store.delete_user("c", bad),
                 lambda: store.get_user("c", bad),
                 lambda: store.list_faces("c", user_id=bad) if bad is not None else store.get_user("c", bad),
                 lambda: store.associate_faces("c", bad, [new_id()]),
                 lambda: store.disassociate_faces("c", bad, [new_id()])):
        with pytest.raises(InvalidParameterException):
            call()


def test_missing_user(store, rng):
    store.create_collection("c", "m")
    face = make_faces(rng, 1)[0]
    store.add_faces("c", [face])
    for call in (lambda: store.delete_user("c", "ghost"), lambda: store.get_user("c", "ghost"),
                 lambda: store.list_faces("c", user_id="ghost"),
                 lambda: store.associate_faces("c", "ghost", [face.face_id]),
                 lambda: store.disassociate_faces("c", "ghost", [face.face_id])):
        with pytest.raises(ResourceNotFoundException):
            call()


def test_delete_user_with_faces_disassociates_them(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 2)
    store.add_faces("c", faces)
    store.create_user("c", "u")
    store.associate_faces("c", "u", [f.face_id for f in faces])
    store.delete_user("c", "u")
    assert store.describe_collection("c").face_count == 2
    assert [f.user_id for f in store.list_faces("c")[0]] == [None, None]
    # the faces can now be deleted, and the user id reused
    assert store.delete_faces("c", [faces[0].face_id])[0] == [faces[0].face_id]
    assert store.create_user("c", "u") == User("u", "CREATED")


def test_associate_faces_failures(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 4)
    store.add_faces("c", faces)
    store.create_user("c", "a")
    store.create_user("c", "b")
    store.associate_faces("c", "b", [faces[1].face_id])
    store.associate_faces("c", "a", [faces[0].face_id])
    missing = new_id()
    result = store.associate_faces(
        "c", "a", [faces[0].face_id, faces[1].face_id, missing, faces[2].face_id])
    assert result.changed == [faces[2].face_id]  # faces[0] already a's: ignored
    assert result.unsuccessful == [
        UnsuccessfulFace(faces[1].face_id, ("ASSOCIATED_TO_A_DIFFERENT_USER",), user_id="b"),
        UnsuccessfulFace(missing, ("FACE_NOT_FOUND",)),
    ]
    assert result.user_status == "ACTIVE"
    assert store.get_faces("c", [faces[1].face_id])[0].user_id == "b"


def test_associate_faces_low_match_confidence(store):
    store.create_collection("c", "m")
    near_a = make_face([1.0, 0.0])
    near_b = make_face([0.9, 0.0])
    far = make_face([0.0, 5.0])
    store.add_faces("c", [near_a, near_b, far])
    store.create_user("c", "u")
    # the first association of an empty user is not thresholded
    assert store.associate_faces("c", "u", [near_a.face_id], max_distance=0.5).changed == [near_a.face_id]
    result = store.associate_faces("c", "u", [near_b.face_id, far.face_id], max_distance=0.5)
    assert result.changed == [near_b.face_id]
    [fail] = result.unsuccessful
    assert fail.face_id == far.face_id and fail.reasons == ("LOW_MATCH_CONFIDENCE",)
    assert fail.distance == pytest.approx(np.hypot(1.0, 5.0))
    assert store.get_faces("c", [far.face_id])[0].user_id is None


def test_associate_faces_user_quota(open_store, rng):
    s = open_store(max_faces_per_user=3)
    s.create_collection("c", "m")
    faces = make_faces(rng, 5)
    s.add_faces("c", faces)
    s.create_user("c", "u")
    s.associate_faces("c", "u", [f.face_id for f in faces[:2]])
    with pytest.raises(ServiceQuotaExceededException):
        s.associate_faces("c", "u", [f.face_id for f in faces[2:4]])
    assert len(s.list_faces("c", user_id="u")[0]) == 2  # nothing changed
    s.associate_faces("c", "u", [faces[2].face_id])
    with pytest.raises(ServiceQuotaExceededException):
        s.associate_faces("c", "u", [faces[3].face_id])
    # re-associating faces it already has is still fine at the limit
    assert s.associate_faces("c", "u", [faces[0].face_id]).changed == []
    s.close()


@pytest.mark.parametrize("face_ids", [[], [str(uuid.uuid4()) for _ in range(101)], ["bad-id"]])
def test_associate_and_disassociate_invalid_lists(store, face_ids):
    store.create_collection("c", "m")
    store.create_user("c", "u")
    with pytest.raises(InvalidParameterException):
        store.associate_faces("c", "u", face_ids)
    with pytest.raises(InvalidParameterException):
        store.disassociate_faces("c", "u", face_ids)


def test_disassociate_faces_failures(store, rng):
    store.create_collection("c", "m")
    faces = make_faces(rng, 3)
    store.add_faces("c", faces)
    store.create_user("c", "a")
    store.create_user("c", "b")
    store.associate_faces("c", "b", [faces[0].face_id])
    missing = new_id()
    result = store.disassociate_faces("c", "a", [faces[0].face_id, faces[1].face_id, missing])
    assert result.changed == []  # faces[1] has no user: ignored
    assert result.unsuccessful == [
        UnsuccessfulFace(faces[0].face_id, ("ASSOCIATED_TO_A_DIFFERENT_USER",), user_id="b"),
        UnsuccessfulFace(missing, ("FACE_NOT_FOUND",)),
    ]
    assert result.user_status == "CREATED"


def test_list_users_pagination(store):
    store.create_collection("c", "m")
    names = [f"user-{i:03d}" for i in range(23)]
    for name in names:
        store.create_user("c", name)
    seen, token = [], None
    while True:
        page, token = store.list_users("c", next_token=token, max_results=5)
        seen += [u.user_id for u in page]
        if token is None:
            break
    assert seen == names
    for bad in (0, 501, -1, 2.5, True):
        with pytest.raises(InvalidParameterException):
            store.list_users("c", max_results=bad)
    assert len(store.list_users("c", max_results=500)[0]) == 23


def _on_disk(data_dir) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.name.startswith(DB_FILENAME))


def test_deleted_faces_and_collections_leave_no_vector_bytes_in_the_files(tmp_path, rng):
    """DeleteFaces / DeleteCollection erase people's vectors from the database files themselves
    (secure_delete, then the WAL folded in and emptied), not just from the index."""
    s = EmbeddedStore(tmp_path)
    s.create_collection("kept", "1.0")
    s.create_collection("gone", "1.0")
    kept, doomed, in_gone = make_faces(rng, 5), make_faces(rng, 5), make_faces(rng, 5)
    s.add_faces("kept", kept + doomed)
    s.add_faces("gone", in_gone)
    s.close()

    def fingerprint(face) -> bytes:  # 32 bytes of the vector as float32: never there by chance
        return np.asarray(face.vector, dtype=np.float32).tobytes()[:32]

    data = _on_disk(tmp_path)
    assert all(fingerprint(f) in data for f in kept + doomed + in_gone)  # the check can see vectors

    s = EmbeddedStore(tmp_path)
    deleted, _ = s.delete_faces("kept", [f.face_id for f in doomed])
    assert len(deleted) == 5
    s.delete_collection("gone")
    data = _on_disk(tmp_path)  # while the store is still open, as on a running server
    assert not any(fingerprint(f) in data for f in doomed + in_gone)
    assert all(fingerprint(f) in data for f in kept)
    s.close()
