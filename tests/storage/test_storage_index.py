"""The in-memory index follows another writer's changes by the cheap paths.

A second EmbeddedStore on the same data_dir has its own connections and its own
index, exactly like another process (which test_storage_concurrency also runs).
"""

from __future__ import annotations

import numpy as np
import pytest
from storage_helpers import make_faces, unit_vectors

from faceaudit.storage import EmbeddedStore, embedded


@pytest.fixture
def pair(tmp_path):
    reader = EmbeddedStore(tmp_path, synchronous="NORMAL")
    writer = EmbeddedStore(tmp_path, synchronous="NORMAL")
    reader.create_collection("c", "m")
    yield reader, writer
    reader.close()
    writer.close()


def brute_ids(faces, query, k):
    m = np.stack([f.vector for f in faces]).astype(np.float64)
    d = np.linalg.norm(m - query.astype(np.float64), axis=1)
    return [fid for _, fid in sorted(zip(d.tolist(), [f.face_id for f in faces]))[:k]]


def search_ids(store, query, k, **kw):
    return [f.face_id for f, _ in store.search("c", query, k, **kw)]


def test_deletions_mark_rows_dead_then_compact(pair):
    reader, writer = pair
    rng = np.random.default_rng(21)
    faces = make_faces(rng, 400)
    writer.add_faces("c", faces)
    assert reader.index_stats("c")["faces"] == 400
    index = reader._indexes["c"]
    buffer = index.index.exact._vectors

    # a few deletions: rows are only marked dead, the buffer stays
    doomed = [faces[i].face_id for i in (0, 5, 399)]
    writer.delete_faces("c", doomed)
    alive = [f for f in faces if f.face_id not in doomed]
    query = faces[5].vector
    assert search_ids(reader, query, 10) == brute_ids(alive, query, 10)
    assert reader.index_stats("c")["faces"] == 397
    exact = index.index.exact
    assert exact._vectors is buffer and exact.snapshot().n == 400 and exact.snapshot().live == 397
    assert search_ids(reader, query, 1000) == brute_ids(alive, query, 1000)

    # additions after deletions keep the dead marks in step
    more = make_faces(rng, 20)
    writer.add_faces("c", more)
    writer.delete_faces("c", [more[3].face_id])
    alive = alive + [f for f in more if f is not more[3]]
    query = more[3].vector
    assert search_ids(reader, query, 5) == brute_ids(alive, query, 5)
    assert reader.index_stats("c")["faces"] == len(alive)

    # past a quarter dead: compacted into new buffers
    doomed = [f.face_id for f in alive[:150]]
    writer.delete_faces("c", doomed)
    alive = alive[150:]
    query = unit_vectors(rng, 1)[0]
    assert search_ids(reader, query, 25) == brute_ids(alive, query, 25)
    assert index.index.exact.snapshot().alive is None and index.index.exact.snapshot().n == len(alive)
    assert index.index.exact._vectors is not buffer


def test_dead_rows_never_reach_user_search_or_exclusion(pair):
    reader, writer = pair
    rng = np.random.default_rng(22)
    faces = make_faces(rng, 50)
    writer.add_faces("c", faces)
    writer.create_user("c", "u")
    writer.associate_faces("c", "u", [faces[0].face_id, faces[1].face_id])
    assert [u.user_id for u, _ in reader.search_users("c", faces[0].vector, 3)] == ["u"]
    writer.disassociate_faces("c", "u", [faces[0].face_id])
    writer.delete_faces("c", [faces[0].face_id, faces[2].face_id])
    [(user, distance)] = reader.search_users("c", faces[0].vector, 3)
    expected = float(np.linalg.norm(faces[0].vector.astype(np.float64) - faces[1].vector))
    assert user.user_id == "u" and distance == pytest.approx(expected, rel=1e-12)
    hits = search_ids(reader, faces[2].vector, 60, exclude_face_ids=[faces[1].face_id, faces[2].face_id])
    assert len(hits) == 47 and faces[0].face_id not in hits and faces[2].face_id not in hits
    assert search_ids(reader, faces[1].vector, 5, user_ids=["u"]) == [faces[1].face_id]


def test_index_far_behind_the_deletion_log_compares_rowids(pair, monkeypatch):
    monkeypatch.setattr(embedded, "DELETION_LOG_KEEP", 3)
    reader, writer = pair
    rng = np.random.default_rng(23)
    faces = make_faces(rng, 100)
    writer.add_faces("c", faces)
    assert reader.index_stats("c")["faces"] == 100
    for face in faces[:6]:  # six delete operations: the log keeps three
        writer.delete_faces("c", [face.face_id])
    conn = writer._conn()
    assert conn.execute("SELECT COUNT(*) FROM face_deletions").fetchone()[0] == 3
    alive = faces[6:]
    query = faces[3].vector
    assert search_ids(reader, query, 10) == brute_ids(alive, query, 10)
    assert reader.index_stats("c")["faces"] == 94


def test_collection_recreated_elsewhere_is_reloaded(pair):
    reader, writer = pair
    rng = np.random.default_rng(24)
    old = make_faces(rng, 30)
    writer.add_faces("c", old)
    assert reader.index_stats("c")["faces"] == 30
    writer.delete_collection("c")
    writer.create_collection("c", "m")
    new = make_faces(rng, 7, dim=64)  # even a different dimension
    writer.add_faces("c", new)
    assert reader.index_stats("c").items() >= {"faces": 7, "dim": 64}.items()
    assert search_ids(reader, new[4].vector, 1) == [new[4].face_id]
    conn = writer._conn()
    assert conn.execute("SELECT COUNT(*) FROM face_deletions").fetchone()[0] == 0
