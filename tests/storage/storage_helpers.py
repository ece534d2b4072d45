"""Shared helpers for the storage tests (imported by name: pytest puts this folder on sys.path).

Also the entry points of the processes the concurrency tests spawn, which is why
they live in an importable module rather than in a test file.
"""

from __future__ import annotations

import uuid

import numpy as np

from faceaudit.storage import EmbeddedStore, PostgresStore, StoredFace

DIM = 128
BACKENDS = ("embedded", "postgres")
_EMBEDDED_ONLY = ("synchronous", "busy_timeout")
_POSTGRES_ONLY = ("hnsw", "approximate_above", "pool_size")


def open_spec(spec: list | tuple, **options):
    """The store a spec names: ["embedded", folder] or ["postgres", url, schema] (for child processes)."""
    if spec[0] == "embedded":
        return EmbeddedStore(spec[1], **{k: v for k, v in options.items() if k not in _POSTGRES_ONLY})
    return PostgresStore(spec[1], schema=spec[2], **{k: v for k, v in options.items() if k not in _EMBEDDED_ONLY})


def store_opener(backend: str, request, make_dir):
    """(open, close_all) for ``backend``; ``make_dir(name)`` gives the embedded store's folder.

    ``open.spec(name)`` is the spec (open_spec) of that store, for child processes."""
    from support.postgres import drop_schema, fresh_schema

    opened: list = []
    schemas: dict[str, str] = {}
    dirs: dict[str, str] = {}
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None

    def spec(name: str = "data") -> list:
        if backend == "embedded":
            if name not in dirs:
                dirs[name] = str(make_dir(name))
            return ["embedded", dirs[name]]
        return ["postgres", url, schemas.setdefault(name, fresh_schema())]

    def open_store(name: str = "data", **options):
        store = open_spec(spec(name), **options)
        opened.append(store)
        return store

    open_store.spec = spec  # type: ignore[attr-defined]

    def close_all():
        for store in opened:
            store.close()
        for schema in schemas.values():
            drop_schema(url, schema)

    return open_store, close_all


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """Random float32 vectors with norms around 1 (the scale of dlib embeddings)."""
    v = rng.standard_normal((n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v *= rng.uniform(0.9, 1.1, size=(n, 1))
    return v.astype(np.float32)


def make_face(vector, *, face_id: str | None = None, external_image_id: str | None = None,
              confidence: float = 99.5) -> StoredFace:
    return StoredFace(
        face_id=face_id or str(uuid.uuid4()),
        image_id=str(uuid.uuid4()),
        external_image_id=external_image_id,
        bounding_box={"Width": 0.25, "Height": 0.5, "Left": 0.125, "Top": 0.0625},
        confidence=confidence,
        index_faces_model_version="dlib-test-1",
        user_id=None,
        vector=np.asarray(vector, dtype=np.float32),
    )


def table_rows(store, table: str) -> int:
    """How many rows a table of the store's database holds, whichever the backend."""
    if isinstance(store, EmbeddedStore):
        return store._conn().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    with store._read() as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def make_faces(rng: np.random.Generator, n: int, dim: int = DIM) -> list[StoredFace]:
    return [make_face(v) for v in unit_vectors(rng, n, dim)]


def process_adder(spec: list, collection_id: str, seed: int, count: int, go) -> None:
    """Spawned process: wait for ``go``, open the store (all at once: the data_dir or
    schema may not exist yet), create the collection unless another process did, then
    add ``count`` faces, one add_faces call each."""
    from faceaudit.errors import ResourceAlreadyExistsException

    rng = np.random.default_rng(seed)
    faces = make_faces(rng, count)
    go.wait(30)
    store = open_spec(spec)
    try:
        store.create_collection(collection_id, "m")
    except ResourceAlreadyExistsException:
        pass
    for face in faces:
        store.add_faces(collection_id, [face])
    store.close()


def process_mutator(spec: list, collection_id: str, add_vectors, add_ids, delete_ids,
                    user_id: str | None, associate_ids) -> None:
    """Spawned process: add faces with given ids/vectors, delete some, associate some."""
    store = open_spec(spec)
    store.add_faces(collection_id, [make_face(v, face_id=f) for v, f in zip(add_vectors, add_ids)])
    if delete_ids:
        store.delete_faces(collection_id, delete_ids)
    if user_id is not None:
        store.associate_faces(collection_id, user_id, associate_ids)
    store.close()
