"""Approximate search: the HNSW graph on its own, its file, and the store switching to it.

The store tests use a small threshold and small graph parameters so that the
graph really answers (a search asking for a quarter of the collection or more
goes to the exact index) and still runs in a fraction of a second.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from storage_helpers import make_faces

from faceaudit.errors import InvalidParameterException
from faceaudit.storage import EmbeddedStore, embedded
from faceaudit.storage.approximate_index import (
    ApproximateIndex,
    ApproximateSnapshot,
    GraphFile,
    HnswParams,
    build_graph,
)
from faceaudit.storage.embedded import ApproximateSearch
from faceaudit.storage.vector_index import NO_GROUP, ExactIndex, _sorted_hits

SMALL = HnswParams(m=16, ef_construction=64, ef_search=32, overfetch=2)
TINY = HnswParams(m=4, ef_construction=8, ef_search=4, overfetch=1)  # misses on purpose


def hard_vectors(rng: np.random.Generator, identities: int, photos: int, dim: int = 128) -> np.ndarray:
    """Face-like: identity centres ~0.83 apart, photos of one identity ~0.45 apart (dlib's scale)."""
    centres = rng.normal(0.0, 0.83 / np.sqrt(2 * dim), size=(identities, dim))
    noise = rng.normal(0.0, 0.45 / np.sqrt(2 * dim), size=(identities, photos, dim))
    return (centres[:, None, :] + noise).reshape(-1, dim).astype(np.float32)


def recall_at(approx, exact, queries, k=10) -> float:
    found = [len(set(approx.nearest(q, k).ids.tolist()) & set(exact.nearest(q, k).ids.tolist())) / k
             for q in queries]
    return float(np.mean(found))


def test_graph_proposes_exact_distances_and_never_returns_removed_rows():
    rng = np.random.default_rng(1)
    vectors = hard_vectors(rng, 500, 4)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = ApproximateIndex(128)
    index.reset(ids, vectors, np.full(len(ids), NO_GROUP))
    index.install_graph(build_graph(index.exact_snapshot(), SMALL))
    snap = index.snapshot()
    assert isinstance(snap, ApproximateSnapshot)
    query = vectors[7] + 0.01
    hits = snap.nearest(query, 5, max_distance=0.5)
    exact = np.linalg.norm(vectors[hits.ids - 1].astype(np.float64) - query.astype(np.float64), axis=1)
    assert hits.distances.tolist() == pytest.approx(exact.tolist(), abs=1e-12)
    assert (hits.distances <= 0.5).all() and hits.ids[0] == 8

    index.remove([8])
    assert 8 not in index.snapshot().nearest(query, 5).ids.tolist()
    assert 8 in snap.nearest(query, 5).ids.tolist()  # an older snapshot keeps its rows
    assert index.dead == 1 and index.graph is not None and index.graph.count == len(ids)

    new = (vectors[7] + 0.001)[None, :]
    index.add([len(ids) + 10], new, [NO_GROUP])
    assert index.snapshot().nearest(query, 1).ids.tolist() == [len(ids) + 10]
    assert index.graph.watermark == len(ids) + 10
    assert len(ids) + 10 not in snap.nearest(query, 5).ids.tolist()  # added after that snapshot


def test_reranking_only_the_rows_near_the_kth_loses_nothing():
    """The search re-ranks only candidates whose float32 distance is near the k-th; the answer
    must equal re-ranking every candidate the graph proposed - ties, duplicates and 0 included."""
    rng = np.random.default_rng(5)
    vectors = hard_vectors(rng, 1500, 4)
    vectors[100:110] = vectors[99]  # eleven copies of one face: ties straddle every k up to 10
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = ApproximateIndex(128)
    index.reset(ids, vectors, np.full(len(ids), NO_GROUP))
    index.install_graph(build_graph(index.exact_snapshot(), SMALL))
    index.remove([3, 50])
    snap = index.snapshot()
    assert isinstance(snap, ApproximateSnapshot)
    exact = index.exact_snapshot()
    queries = [vectors[99], vectors[99] + 1e-4, vectors[3] + 0.001, *(vectors[rng.integers(0, 6000, 20)] + 0.01)]
    for query in queries:
        for k in (1, 5, 10, 12):
            q = np.asarray(query, dtype=np.float32)
            labels, _ = snap.graph.search(q, snap.graph.params.candidates(k))
            positions = exact.positions_if_present(labels)
            positions = positions[exact.alive[positions]] if exact.alive is not None else positions
            every = _sorted_hits(exact.ids[positions], exact.exact_distances(positions, q), k, None)
            hits = snap.nearest(query, k)
            assert hits.ids.tolist() == every.ids.tolist()
            assert hits.distances.tolist() == every.distances.tolist()
    assert len(snap.nearest(vectors[99], 3).ids) == 11  # the tied copies all come back


def test_recall_on_a_hard_synthetic_set():
    rng = np.random.default_rng(2)
    vectors = hard_vectors(rng, 750, 4)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = ApproximateIndex(128)
    index.reset(ids, vectors, np.full(len(ids), NO_GROUP))
    index.install_graph(build_graph(index.exact_snapshot(), HnswParams()))  # the shipped parameters
    # another photo of an indexed identity: a photo's own noise again around it
    queries = vectors[rng.integers(0, len(vectors), 100)] + \
        rng.normal(0, 0.45 / 16, size=(100, 128)).astype(np.float32)
    assert recall_at(index.snapshot(), index.exact_snapshot(), queries) >= 0.98
    # and the bound can fail: a starved graph misses
    weak = ApproximateIndex(128)
    weak.reset(ids, vectors, np.full(len(ids), NO_GROUP))
    weak.install_graph(build_graph(weak.exact_snapshot(), TINY))
    assert recall_at(weak.snapshot(), weak.exact_snapshot(), queries) < 0.98


def test_tombstones_past_half_ask_for_a_rebuild():
    rng = np.random.default_rng(3)
    vectors = hard_vectors(rng, 100, 4)
    ids = np.arange(1, 401, dtype=np.int64)
    index = ApproximateIndex(128)
    index.reset(ids, vectors, np.full(400, NO_GROUP))
    index.install_graph(build_graph(index.exact_snapshot(), SMALL))
    index.remove(ids[:150])
    assert not index.needs_rebuild()
    index.remove(ids[150:210])
    assert index.needs_rebuild()


# -- the store ------------------------------------------------------------------------

def approximate_store(path, threshold=200, params=SMALL, background=False) -> EmbeddedStore:
    return EmbeddedStore(path, synchronous="NORMAL",
                         approximate=ApproximateSearch(threshold=threshold, params=params, background=background))


def graph_path(store: EmbeddedStore, collection_id: str = "c"):
    with sqlite3.connect(store.db_path) as conn:
        rowid = conn.execute("SELECT id FROM collections WHERE collection_id = ?", (collection_id,)).fetchone()[0]
    return store.index_dir / f"{rowid}.hnsw"


def test_store_switches_to_the_graph_at_the_threshold(tmp_path):
    rng = np.random.default_rng(4)
    store = approximate_store(tmp_path)
    store.create_collection("c", "m")
    faces = make_faces(rng, 199)
    store.add_faces("c", faces)
    assert store.search("c", faces[0].vector, 1)[0][0].face_id == faces[0].face_id
    assert store.index_stats("c")["searching"] == "exact"
    assert not graph_path(store).exists()
    more = make_faces(rng, 1)
    store.add_faces("c", more)
    assert store.search("c", more[0].vector, 1)[0][0].face_id == more[0].face_id
    stats = store.index_stats("c")
    assert stats["searching"] == "approximate" and stats["mode"] == "auto"
    assert stats["graph"] == {"nodes": 200, "dead": 0, "watermark": 200}
    assert graph_path(store).exists()
    store.close()


def test_search_modes_are_kept_with_the_collection_and_honoured(tmp_path):
    rng = np.random.default_rng(5)
    store = approximate_store(tmp_path, threshold=1, params=TINY)
    store.create_collection("c", "m")
    vectors = hard_vectors(rng, 300, 4)
    faces = make_faces(rng, len(vectors))
    for face, vector in zip(faces, vectors):
        face.vector = vector
    store.add_faces("c", faces)
    queries = vectors[rng.integers(0, len(vectors), 60)] + 0.02
    matrix = vectors.astype(np.float64)

    def truth(q):
        d = np.linalg.norm(matrix - q.astype(np.float64), axis=1)
        return [faces[i].face_id for i in np.argsort(d, kind="stable")[:10]]

    def misses():
        return sum([f.face_id for f, _ in store.search("c", q, 10)] != truth(q) for q in queries)

    assert store.search_mode("c") == "auto"
    assert misses() > 0  # the starved graph does miss: the exact check below can fail
    store.set_search_mode("c", "exact")
    assert misses() == 0
    assert store.index_stats("c")["searching"] == "exact"
    other = approximate_store(tmp_path, threshold=1, params=TINY)  # another process sees the mode
    assert other.search_mode("c") == "exact"
    other.set_search_mode("c", "approximate")
    assert store.search_mode("c") == "approximate"
    with pytest.raises(InvalidParameterException):
        store.set_search_mode("c", "fast")
    other.close()
    store.close()


def test_graph_is_persisted_caught_up_on_reload_and_deletions_are_tombstones(tmp_path):
    rng = np.random.default_rng(6)
    store = approximate_store(tmp_path)
    store.create_collection("c", "m")
    first = make_faces(rng, 300)
    store.add_faces("c", first)
    store.search("c", first[0].vector, 1)
    store.close()
    # another writer without a graph adds and deletes
    writer = EmbeddedStore(tmp_path, synchronous="NORMAL", approximate=ApproximateSearch(threshold=None))
    later = make_faces(rng, 50)
    writer.add_faces("c", later)
    writer.delete_faces("c", [f.face_id for f in first[:20]])
    assert writer.index_stats("c")["searching"] == "exact"
    writer.close()

    reopened = approximate_store(tmp_path)
    hits = reopened.search("c", first[5].vector, 3)
    assert first[5].face_id not in [f.face_id for f, _ in hits]
    assert reopened.search("c", later[7].vector, 1)[0][0].face_id == later[7].face_id
    stats = reopened.index_stats("c")
    assert stats["graph_event"] == "loaded"
    assert stats["graph"] == {"nodes": 350, "dead": 20, "watermark": 350}
    reopened.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "other-params", "other-vectors"])
def test_a_damaged_or_foreign_graph_file_is_rebuilt_from_the_database(tmp_path, damage):
    rng = np.random.default_rng(7)
    store = approximate_store(tmp_path)
    store.create_collection("c", "m")
    faces = make_faces(rng, 250)
    store.add_faces("c", faces)
    store.search("c", faces[0].vector, 1)
    store.close()
    path = graph_path(store)
    data = bytearray(path.read_bytes())
    params = SMALL
    if damage == "flip":
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "other-params":
        params = HnswParams(m=8, ef_construction=64, ef_search=32, overfetch=2)
    else:  # a well-formed file for this collection whose vectors are not the database's
        exact = ExactIndex(128)
        exact.reset(np.arange(1, 251), make_faces_vectors(rng, 250), np.full(250, NO_GROUP))
        GraphFile(path).save(build_graph(exact.snapshot(), SMALL), collection=1)
    reopened = approximate_store(tmp_path, params=params)
    assert reopened.search("c", faces[9].vector, 1)[0][0].face_id == faces[9].face_id
    stats = reopened.index_stats("c")
    assert stats["graph_event"].startswith("rebuilt:")
    assert stats["searching"] == "approximate" and stats["graph"]["nodes"] == 250
    reopened.close()
    again = approximate_store(tmp_path, params=params)  # the rebuilt graph was written back
    again.search("c", faces[0].vector, 1)
    assert again.index_stats("c")["graph_event"] == "loaded"
    again.close()


def make_faces_vectors(rng, n):
    return np.stack([f.vector for f in make_faces(rng, n)])


def test_a_graph_file_is_kept_when_only_how_hard_searches_look_changed(tmp_path):
    """ef_search and overfetch are search settings: changing them reuses the file (a rebuild
    takes minutes at a million faces), and the loaded graph searches with the new ef_search."""
    rng = np.random.default_rng(8)
    store = approximate_store(tmp_path)
    store.create_collection("c", "m")
    faces = make_faces(rng, 250)
    store.add_faces("c", faces)
    store.search("c", faces[0].vector, 1)
    store.close()
    harder = HnswParams(m=SMALL.m, ef_construction=SMALL.ef_construction, ef_search=48, overfetch=3)
    reopened = approximate_store(tmp_path, params=harder)
    assert reopened.search("c", faces[9].vector, 1)[0][0].face_id == faces[9].face_id
    assert reopened.index_stats("c")["graph_event"] == "loaded"
    reopened.close()
    import faiss
    loaded = GraphFile(graph_path(store)).load(1, 128, harder)
    assert loaded.params == harder and faiss.downcast_index(loaded._index.index).hnsw.efSearch == 48


def test_graph_builds_in_the_background_while_searches_stay_exact(tmp_path):
    rng = np.random.default_rng(8)
    store = approximate_store(tmp_path, background=True)
    store.create_collection("c", "m")
    faces = make_faces(rng, 400)
    store.add_faces("c", faces)
    assert store.search("c", faces[3].vector, 1)[0][0].face_id == faces[3].face_id
    store.wait_for_index("c")
    assert store.index_stats("c")["searching"] == "approximate"
    store.close()


def test_deleting_a_collection_removes_its_graph_file(tmp_path):
    rng = np.random.default_rng(9)
    store = approximate_store(tmp_path)
    store.create_collection("c", "m")
    faces = make_faces(rng, 220)
    store.add_faces("c", faces)
    store.search("c", faces[0].vector, 1)
    path = graph_path(store)
    assert path.exists()
    store.delete_collection("c")
    assert not path.exists()
    store.close()


def test_a_version_1_database_gains_the_search_mode_column(tmp_path):
    with sqlite3.connect(tmp_path / embedded.DB_FILENAME) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in embedded._SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO meta VALUES ('token_secret', x'00112233')")
        conn.execute("INSERT INTO collections (collection_id, arn, face_model_version, created_ms) "
                     "VALUES ('old', 'arn', 'm', 0)")
    store = EmbeddedStore(tmp_path, synchronous="NORMAL")
    assert store.search_mode("old") == "auto"
    store.close()
    with sqlite3.connect(tmp_path / embedded.DB_FILENAME) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == embedded.SCHEMA_VERSION
