"""Search: exact nearest neighbours (checked against brute force), filters, users.

On both backends (``backend`` / ``open_store``, tests/storage/conftest.py): PostgreSQL's
answers are held to the same exact rankings and distances as the embedded store's."""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import pytest
from storage_helpers import DIM, make_face, make_faces, store_opener, unit_vectors

from faceaudit.errors import InvalidParameterException
from faceaudit.storage import User


@pytest.fixture(scope="module")
def big(backend, request, tmp_path_factory):
    """5,000 random faces in collection 'big' (module-scoped: built once per backend)."""
    rng = np.random.default_rng(2024)
    opener, close_all = store_opener(backend, request, tmp_path_factory.mktemp)
    # no HNSW index: exact search never reads it, and it would cost ~20 s for 5,000 faces
    store = opener("big", synchronous="NORMAL", hnsw=False)
    store.create_collection("big", "m")
    faces = make_faces(rng, 5000)
    for start in range(0, 5000, 1000):
        store.add_faces("big", faces[start:start + 1000])
    yield store, faces, rng
    close_all()


def brute_force(faces, query, k=None, max_distance=None, allowed=None):
    """(face_id, distance) by exact float64 distance, ties by face_id."""
    matrix = np.stack([f.vector for f in faces]).astype(np.float64)
    distances = np.linalg.norm(matrix - np.asarray(query, np.float64), axis=1)
    ranked = sorted((float(d), f.face_id) for d, f in zip(distances, faces)
                    if (allowed is None or f.face_id in allowed)
                    and (max_distance is None or d <= max_distance))
    return [(fid, d) for d, fid in ranked[:k]]


def ids_and_distances(results):
    return [(face.face_id, distance) for face, distance in results]


def assert_same_ranking(got, expected):
    assert [fid for fid, _ in got] == [fid for fid, _ in expected]
    np.testing.assert_allclose([d for _, d in got], [d for _, d in expected], rtol=1e-12, atol=1e-12)


def test_exact_nearest_neighbours_match_brute_force(big):
    store, faces, rng = big
    queries = list(unit_vectors(rng, 20)) + [faces[17].vector, faces[4321].vector]
    for i, query in enumerate(queries):
        k = [1, 5, 10, 100, 4096][i % 5]
        got = ids_and_distances(store.search("big", query, k))
        assert len(got) == k
        assert_same_ranking(got, brute_force(faces, query, k))
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(got))


def test_search_returns_full_records(big):
    store, faces, _ = big
    [(face, distance)] = store.search("big", faces[42].vector, 1)
    assert distance == 0.0
    assert face == faces[42]


def test_more_results_than_faces(big):
    store, faces, rng = big
    query = unit_vectors(rng, 1)[0]
    got = ids_and_distances(store.search("big", query, 10_000))
    assert len(got) == 5000
    assert_same_ranking(got, brute_force(faces, query))


def test_max_distance(big):
    store, faces, _ = big
    query = faces[7].vector * 1.01
    # pick a radius that cuts through the distribution
    all_distances = [d for _, d in brute_force(faces, query)]
    radius = all_distances[40]
    got = ids_and_distances(store.search("big", query, 1000, max_distance=radius))
    expected = brute_force(faces, query, 1000, max_distance=radius)
    assert_same_ranking(got, expected)
    assert 41 <= len(got) and all(d <= radius for _, d in got)
    # k smaller than the number within the radius
    assert_same_ranking(ids_and_distances(store.search("big", query, 5, max_distance=radius)),
                        expected[:5])
    assert store.search("big", query, 10, max_distance=0.0) == []
    assert ids_and_distances(store.search("big", faces[7].vector, 10, max_distance=0.0)) == [
        (faces[7].face_id, 0.0)]


def test_exclusion(big):
    store, faces, _ = big
    query = faces[100].vector
    first = ids_and_distances(store.search("big", query, 6))
    assert first[0] == (faces[100].face_id, 0.0)
    excluded = [first[0][0], first[2][0], str(uuid.uuid4())]
    got = ids_and_distances(store.search("big", query, 4, exclude_face_ids=excluded))
    assert got == [first[1], first[3], first[4], first[5]]


def test_user_filter_and_search_users(open_store):
    rng = np.random.default_rng(5)
    store = open_store(synchronous="NORMAL")
    store.create_collection("c", "m")
    faces = make_faces(rng, 600)
    store.add_faces("c", faces)
    owners: dict[str, str] = {}
    for u in range(12):
        name = f"user{u:02d}"
        store.create_user("c", name)
        members = [faces[i].face_id for i in range(u, 600, 13)][: 5 + u]
        store.associate_faces("c", name, members)
        owners.update(dict.fromkeys(members, name))
    store.create_user("c", "empty")

    query = unit_vectors(rng, 1)[0]
    wanted = {"user03", "user07", "nobody"}
    allowed = {fid for fid, name in owners.items() if name in wanted}
    got = ids_and_distances(store.search("c", query, 8, user_ids=sorted(wanted)))
    assert_same_ranking(got, brute_force(faces, query, 8, allowed=allowed))
    assert all(owners[fid] in wanted for fid, _ in got)
    assert store.search("c", query, 8, user_ids=[]) == []
    assert store.search("c", query, 8, user_ids=["nobody"]) == []

    # search_users: users ranked by their closest face; users without faces never match
    per_user: dict[str, float] = {}
    for fid, d in brute_force(faces, query):
        if fid in owners:
            per_user.setdefault(owners[fid], d)
    expected = sorted((d, name) for name, d in per_user.items())
    got_users = store.search_users("c", query, 5)
    assert [u for u, _ in got_users] == [User(name, "ACTIVE") for _, name in expected[:5]]
    np.testing.assert_allclose([d for _, d in got_users], [d for d, _ in expected[:5]], rtol=1e-12)
    assert len(store.search_users("c", query, 500)) == 12
    radius = expected[2][0]
    assert [u.user_id for u, _ in store.search_users("c", query, 10, max_distance=radius)] == [
        name for _, name in expected[:3]]
    got_excluded = store.search_users("c", query, 3, exclude_user_ids=[expected[0][1]])
    assert [u.user_id for u, _ in got_excluded] == [name for _, name in expected[1:4]]

    # search by a user's own vectors (SearchUsers by UserId): min over all pairs
    own = np.stack([f.vector for f in faces if owners.get(f.face_id) == "user04"])
    others = store.search_users("c", own, 3, exclude_user_ids=["user04"])
    pair_best = {}
    for f in faces:
        if f.face_id in owners and owners[f.face_id] != "user04":
            d = float(np.linalg.norm(own.astype(np.float64) - f.vector.astype(np.float64), axis=1).min())
            name = owners[f.face_id]
            pair_best[name] = min(pair_best.get(name, np.inf), d)
    expected_pairs = sorted((d, name) for name, d in pair_best.items())[:3]
    assert [(u.user_id, d) for u, d in others] == [(n, pytest.approx(d, rel=1e-12)) for d, n in expected_pairs]
    store.close()


def test_ties_broken_by_face_id(open_store):
    store = open_store(synchronous="NORMAL")
    store.create_collection("c", "m")
    vector = np.linspace(-1, 1, DIM).astype(np.float32)
    twins = [make_face(vector) for _ in range(6)]
    other = make_face(vector + 1)
    store.add_faces("c", [other] + twins)
    got = ids_and_distances(store.search("c", vector, 4))
    assert got == [(fid, 0.0) for fid in sorted(f.face_id for f in twins)[:4]]
    # ties at equal non-zero distance too
    store.create_user("c", "b")
    store.create_user("c", "a")
    store.associate_faces("c", "b", [twins[0].face_id])
    store.associate_faces("c", "a", [twins[1].face_id])
    assert [u.user_id for u, _ in store.search_users("c", vector + 0.5, 2)] == ["a", "b"]
    store.close()


def test_near_ties_are_resolved_exactly(open_store):
    """Distances closer together than float32 rounding: still exactly ranked."""
    rng = np.random.default_rng(11)
    store = open_store(synchronous="NORMAL")
    store.create_collection("c", "m")
    base = unit_vectors(rng, 1)[0].astype(np.float32)
    faces = []
    for i in range(300):
        v = base.copy()
        j = i % DIM
        v[j] = np.nextafter(v[j], np.float32(np.inf) if i % 2 else np.float32(-np.inf))
        faces.append(make_face(v))
    faces += make_faces(rng, 200)
    store.add_faces("c", faces)
    query = base * np.float32(1.3)
    for k in (1, 7, 50, 299):
        assert_same_ranking(ids_and_distances(store.search("c", query, k)),
                            brute_force(faces, query, k))
    store.close()


def test_empty_collection_and_bad_queries(open_store, big):
    store = open_store()
    store.create_collection("c", "m")
    assert store.search("c", np.ones(DIM), 5) == []
    assert store.search_users("c", np.ones(DIM), 5) == []
    assert store.index_stats("c").items() >= {"faces": 0, "dim": 0}.items()
    big_store = big[0]
    for bad in (np.ones(DIM - 1), np.ones((2, DIM)), [np.nan] * DIM, "abc", np.ones(0)):
        with pytest.raises(InvalidParameterException):
            big_store.search("big", bad, 1)
    for k in (0, -3, 1.5, None):
        with pytest.raises(InvalidParameterException):
            big_store.search("big", np.ones(DIM), k)
    with pytest.raises(InvalidParameterException):
        big_store.search("big", np.ones(DIM), 1, max_distance=-1)
    with pytest.raises(InvalidParameterException):
        big_store.search("big", np.ones(DIM), 1, exclude_face_ids=["bad"])
    with pytest.raises(InvalidParameterException):
        big_store.search_users("big", np.ones((0, DIM)), 1)
    store.close()


def test_index_follows_deletes_and_adds_in_process(open_store):
    rng = np.random.default_rng(3)
    store = open_store(synchronous="NORMAL")
    store.create_collection("c", "m")
    faces = make_faces(rng, 200)
    store.add_faces("c", faces)
    assert store.search("c", faces[10].vector, 1)[0][0].face_id == faces[10].face_id
    store.delete_faces("c", [faces[10].face_id, faces[11].face_id])
    hit = store.search("c", faces[10].vector, 1)[0]
    assert hit[0].face_id != faces[10].face_id and hit[1] > 0
    more = make_faces(rng, 500)  # grows past the buffer's spare capacity
    for chunk in range(0, 500, 50):
        store.add_faces("c", more[chunk:chunk + 50])
        assert store.index_stats("c")["faces"] == 198 + chunk + 50
    alive = faces[:10] + faces[12:] + more
    query = unit_vectors(rng, 1)[0]
    assert_same_ranking(ids_and_distances(store.search("c", query, 30)), brute_force(alive, query, 30))
    store.close()
