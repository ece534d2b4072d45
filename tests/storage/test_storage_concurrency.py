"""Threads, processes and SIGKILL: nothing lost, nothing half-written, index in step.

On both backends (``open_store``, tests/storage/conftest.py): for PostgreSQL the
processes are servers sharing one database, and SIGKILL kills a client mid-transaction.
The SQLite file checks (integrity_check, the in-memory index's buffers) are the embedded
store's alone."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from storage_helpers import make_faces, process_adder, process_mutator, table_rows, unit_vectors

from faceaudit.storage import EmbeddedStore
from faceaudit.storage.embedded import DB_FILENAME

SRC = str(Path(__file__).resolve().parents[2] / "src")
HERE = str(Path(__file__).resolve().parent)  # storage_helpers, for the child


def all_faces(store, collection_id):
    faces, token = [], None
    while True:
        page, token = store.list_faces(collection_id, next_token=token, max_results=500)
        faces += page
        if token is None:
            return faces


def assert_every_face_finds_itself(store, collection_id):
    faces = all_faces(store, collection_id)
    for face in faces:
        [(hit, distance)] = store.search(collection_id, face.vector, 1)
        assert hit.face_id == face.face_id and distance == 0.0
    return faces


def test_threads_adding_one_face_per_call(open_store):
    store = open_store()  # default settings: synchronous=FULL; PostgreSQL with its HNSW index
    store.create_collection("c", "m")
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(10)

    def writer(seed):
        try:
            faces = make_faces(np.random.default_rng(seed), 50)
            start.wait()
            for face in faces:
                store.add_faces("c", [face])
        except BaseException as exc:  # any failure in the thread is reported below
            errors.append(exc)

    def searcher(seed):
        try:
            rng = np.random.default_rng(seed)
            start.wait()
            seen = 0
            while not done.is_set():
                got = store.search("c", unit_vectors(rng, 1)[0], 10_000)
                assert len(got) >= seen  # each search sees a newer snapshot
                assert all(a[1] <= b[1] for a, b in itertools.pairwise(got))
                seen = len(got)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    searchers = [threading.Thread(target=searcher, args=(100 + i,)) for i in range(2)]
    for t in writers + searchers:
        t.start()
    for t in writers:
        t.join(60)
    done.set()
    for t in searchers:
        t.join(60)
    assert not errors, errors
    assert store.describe_collection("c").face_count == 400
    faces = assert_every_face_finds_itself(store, "c")
    assert len({f.face_id for f in faces}) == 400
    assert store.index_stats("c")["faces"] == 400
    store.close()


def test_processes_adding_concurrently(open_store):
    """4 processes open a not-yet-existing data_dir (schema) at once and add 50 faces each."""
    spec = open_store.spec()
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=process_adder, args=(spec, "c", seed, 50, go))
             for seed in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let them all import and wait at the gate
    go.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = open_store()
    assert store.describe_collection("c").face_count == 200
    faces = assert_every_face_finds_itself(store, "c")
    assert len({f.face_id for f in faces}) == 200
    # every vector each process added is there (face ids are random; vectors are seeded)
    for seed in range(4):
        for face in make_faces(np.random.default_rng(seed), 50):
            [(_, distance)] = store.search("c", face.vector, 1)
            assert distance == 0.0
    assert store.index_stats("c")["faces"] == 200
    store.close()


def test_other_process_commits_seen_on_next_search(open_store):
    rng = np.random.default_rng(8)
    a = open_store()
    embedded = isinstance(a, EmbeddedStore)  # the in-memory index's buffers are its own
    a.create_collection("c", "m")
    faces = make_faces(rng, 100)
    a.add_faces("c", faces)
    a.create_user("c", "u")
    assert a.index_stats("c")["faces"] == 100
    if embedded:
        index = a._indexes["c"]
        buffer_before = index.index.exact._vectors
    ctx = multiprocessing.get_context("spawn")

    def run_b(vectors, ids, delete_ids, user, associate):
        p = ctx.Process(target=process_mutator,
                        args=(open_store.spec(), "c", vectors, ids, delete_ids, user, associate))
        p.start()
        p.join(60)
        assert p.exitcode == 0

    # B only adds: A appends them without reloading (same buffer, more rows)
    new_vectors = unit_vectors(rng, 5)
    new_ids = [f.face_id for f in make_faces(rng, 5)]
    run_b(new_vectors, new_ids, [], None, [])
    for vector, face_id in zip(new_vectors, new_ids):
        [(hit, distance)] = a.search("c", vector, 1)
        assert (hit.face_id, distance) == (face_id, 0.0)
    assert a.index_stats("c")["faces"] == 105
    if embedded:
        assert index.index.exact._vectors is buffer_before

    # B adds, deletes and associates: A drops the deleted rows and sees the link
    more_vectors = unit_vectors(rng, 3)
    more_ids = [f.face_id for f in make_faces(rng, 3)]
    deleted = [faces[0].face_id, faces[50].face_id, new_ids[0]]
    run_b(more_vectors, more_ids, deleted, "u", [faces[7].face_id, more_ids[1]])
    for gone in (faces[0], faces[50]):
        assert a.search("c", gone.vector, 1)[0][0].face_id != gone.face_id
    assert a.search("c", new_vectors[0], 1)[0][0].face_id != new_ids[0]
    assert a.search("c", more_vectors[2], 1)[0][0].face_id == more_ids[2]
    assert a.describe_collection("c").face_count == 105
    assert a.index_stats("c")["faces"] == 105
    users_hits = a.search("c", faces[7].vector, 10, user_ids=["u"])
    assert sorted(h.face_id for h, _ in users_hits) == sorted([faces[7].face_id, more_ids[1]])
    assert [u.user_id for u, _ in a.search_users("c", faces[7].vector, 5)] == ["u"]
    a.close()


CRASH_CHILD = r"""
import json, sys, uuid
import numpy as np
from faceaudit.errors import ResourceAlreadyExistsException
from faceaudit.storage import StoredFace, ConflictException, ServiceQuotaExceededException
from storage_helpers import open_spec

spec, seed = json.loads(sys.argv[1]), int(sys.argv[2])
store = open_spec(spec)
try:
    store.create_collection("crash", "m")
except ResourceAlreadyExistsException:
    pass
user = f"user-{seed}"
try:
    store.create_user("crash", user)
except ConflictException:
    pass
rng = np.random.default_rng(seed)
recent = []
i = 0
while True:
    n = int(rng.integers(1, 8))
    vectors = rng.standard_normal((n, 128)).astype(np.float32)
    faces = [StoredFace(str(uuid.uuid4()), str(uuid.uuid4()), f"img-{i}",
                        {"Width": 0.5, "Height": 0.5, "Left": 0.1, "Top": 0.1}, 99.0, "m",
                        None, v) for v in vectors]
    store.add_faces("crash", faces)
    recent += [f.face_id for f in faces]
    if i % 4 == 3:
        store.delete_faces("crash", recent[-3:-1])
        del recent[-3:-1]
    if i % 6 == 5:
        try:
            store.associate_faces("crash", user, recent[-2:])
        except ServiceQuotaExceededException:
            pass
    if i % 12 == 11:
        store.disassociate_faces("crash", user, recent[-2:-1])
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def check_database(open_store, observer):
    reopened = open_store()
    if isinstance(reopened, EmbeddedStore):  # the file itself (PostgreSQL checks its own pages)
        conn = sqlite3.connect(Path(open_store.spec()[1]) / DB_FILENAME)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()
    rows = table_rows(reopened, "faces")
    users = table_rows(reopened, "users")
    collection = reopened.describe_collection("crash")
    assert collection.face_count == rows
    assert collection.user_count == users
    faces = assert_every_face_finds_itself(reopened, "crash")
    assert len(faces) == rows
    assert reopened.index_stats("crash")["faces"] == collection.face_count
    # a store that was open all along catches up too
    assert observer.index_stats("crash")["faces"] == collection.face_count
    for face in faces[-20:]:
        [(hit, distance)] = observer.search("crash", face.vector, 1)
        assert (hit.face_id, distance) == (face.face_id, 0.0)
    reopened.close()
    return rows


def test_sigkill_at_a_random_moment_leaves_a_consistent_store(open_store):
    spec = json.dumps(open_store.spec())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")])}
    observer = None
    rounds = random.Random()
    previous = 0
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, spec, str(round_)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        try:
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
            if observer is None:
                observer = open_store()
                observer.search("crash", np.ones(128), 1)  # index loaded while the child writes
            time.sleep(rounds.uniform(0.05, 0.6))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        rows = check_database(open_store, observer)
        assert rows > previous  # the child did commit work in this round
        previous = rows
    observer.close()
