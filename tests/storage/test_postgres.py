"""What only the PostgreSQL backend has: its migrations, its HNSW indexes, opt-in approximate
search, choosing it by URL. Everything it shares with the embedded store is tested on both
backends by the other files here."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest
from storage_helpers import make_faces, unit_vectors

from faceaudit.errors import InternalServerError
from faceaudit.storage import EmbeddedStore, PostgresStore, open_store
from faceaudit.storage.postgres import SCHEMA_VERSION
from support.postgres import drop_schema, fresh_schema


@pytest.fixture
def schema(postgres_url):
    name = fresh_schema()
    yield name
    drop_schema(postgres_url, name)


def sql(url: str, schema: str, statement: str, params=()):
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema},public") as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def test_migrated_once_by_servers_starting_together(postgres_url, schema):
    stores, errors = [], []
    gate = threading.Barrier(4)

    def start():
        try:
            gate.wait()
            stores.append(PostgresStore(postgres_url, schema=schema, pool_size=1))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sql(postgres_url, schema, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    # one token secret: a NextToken from one server is good on every other
    assert sql(postgres_url, schema, "SELECT count(*) FROM meta WHERE key = 'token_secret'") == [(1,)]
    a, b = stores[:2]
    a.create_collection("c", "m")
    a.add_faces("c", make_faces(np.random.default_rng(1), 3))
    _, token = a.list_faces("c", max_results=1)
    assert [f.face_id for f in b.list_faces("c", next_token=token)[0]] == [
        f.face_id for f in a.list_faces("c")[0][1:]]
    for store in stores:
        store.close()


def test_database_newer_than_the_code_is_refused(postgres_url, schema):
    PostgresStore(postgres_url, schema=schema).close()
    sql(postgres_url, schema, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(InternalServerError, match=f"schema version {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}"):
        PostgresStore(postgres_url, schema=schema)


def test_each_collection_gets_an_hnsw_index_with_its_dimension(postgres_url, schema):
    store = PostgresStore(postgres_url, schema=schema)
    rng = np.random.default_rng(2)
    store.create_collection("a", "m")
    store.create_collection("b", "m")
    store.add_faces("a", make_faces(rng, 2, dim=128))
    store.add_faces("b", make_faces(rng, 2, dim=512))
    definitions = dict(sql(postgres_url, schema, "SELECT indexname, indexdef FROM pg_indexes "
                                                 "WHERE schemaname = %s AND indexdef LIKE '%%hnsw%%'", (schema,)))
    assert len(definitions) == 2
    assert any("vector(128)" in d and "vector_l2_ops" in d for d in definitions.values())
    assert any("vector(512)" in d for d in definitions.values())
    store.delete_collection("a")
    remaining = sql(postgres_url, schema, "SELECT indexdef FROM pg_indexes WHERE schemaname = %s "
                                          "AND indexdef LIKE '%%hnsw%%'", (schema,))
    assert len(remaining) == 1 and "vector(512)" in remaining[0][0]
    store.close()


def test_approximate_search_uses_the_index_and_ranks_what_it_finds_exactly(postgres_url, schema):
    rng = np.random.default_rng(3)
    faces = make_faces(rng, 300)
    exact = PostgresStore(postgres_url, schema=schema)
    approximate = PostgresStore(postgres_url, schema=schema, approximate_above=100)
    exact.create_collection("c", "m")
    exact.add_faces("c", faces)
    for face in faces[:20]:  # a stored face is its own nearest neighbour, at distance 0
        [(hit, distance)] = approximate.search("c", face.vector, 1)
        assert (hit.face_id, distance) == (face.face_id, 0.0)
    query = unit_vectors(rng, 1)[0]
    found = approximate.search("c", query, 10)
    truth = {f.face_id: d for f, d in exact.search("c", query, 300)}
    assert len(found) == 10
    assert [d for _, d in found] == sorted(d for _, d in found)
    assert all(truth[f.face_id] == d for f, d in found)  # exact distances of what it found
    recall = len({f.face_id for f, _ in found} & set(list(truth)[:10])) / 10
    assert recall >= 0.8  # 300 faces at ef_search 100: HNSW finds (nearly) all
    # the searches went through the collection's HNSW index (statistics arrive within ~1 s)
    deadline = time.monotonic() + 10
    while not sql(postgres_url, schema, "SELECT idx_scan FROM pg_stat_user_indexes "
                                        "WHERE schemaname = %s AND indexrelname LIKE 'faces_hnsw_%%'",
                  (schema,))[0][0]:
        assert time.monotonic() < deadline, "the HNSW index was never scanned"
        time.sleep(0.2)
    exact.close()
    approximate.close()


def test_a_collection_set_to_exact_is_never_searched_approximately(postgres_url, schema):
    rng = np.random.default_rng(4)
    approximate = PostgresStore(postgres_url, schema=schema, approximate_above=10)
    other_server = PostgresStore(postgres_url, schema=schema, approximate_above=10)
    approximate.create_collection("c", "m")
    approximate.add_faces("c", make_faces(rng, 20))
    assert other_server.search_mode("c") == "approximate"
    approximate.set_search_mode("c", "exact")  # as the guard does for a public-safety collection
    assert other_server.search_mode("c") == "exact"
    assert PostgresStore(postgres_url, schema=schema).search_mode("c") == "exact"
    approximate.set_search_mode("c", "auto")
    assert other_server.search_mode("c") == "approximate"
    approximate.close()
    other_server.close()


def test_an_unreachable_database_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match=r"could not connect to the database"):
        PostgresStore(f"postgresql://nobody@/nothing?host={tmp_path}", connect_timeout=2)


def test_open_store_chooses_by_url(tmp_path, postgres_url, schema):
    assert isinstance(open_store(None, tmp_path / "a"), EmbeddedStore)
    assert isinstance(open_store("embedded", tmp_path / "b"), EmbeddedStore)
    with pytest.raises(ValueError, match="postgresql://"):
        open_store("mysql://x", tmp_path / "c")
    store = open_store(postgres_url, tmp_path / "d", pool_size=2)
    assert isinstance(store, PostgresStore)
    store.close()
