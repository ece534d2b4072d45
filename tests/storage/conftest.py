"""Every storage test that is about the FaceStore contract runs on both backends.

``backend`` is parametrized ("embedded", "postgres"); ``open_store(name="data", **options)``
opens a store of that backend: EmbeddedStore(tmp_path / name) or PostgresStore on the
session's PostgreSQL in a schema of its own per (test, name). The same ``name`` twice
gives two stores on one database (as two servers would have). Options that only one
backend has (``synchronous``, ``busy_timeout``; ``hnsw``) are dropped for the other.
Tests about SQLite itself (files, pragmas, the in-memory index, killing a writer) use
EmbeddedStore directly and say so.
"""

from __future__ import annotations

import pytest

from faceaudit.storage import EmbeddedStore, PostgresStore

BACKENDS = ("embedded", "postgres")
_EMBEDDED_ONLY = ("synchronous", "busy_timeout")
_POSTGRES_ONLY = ("hnsw", "approximate_above", "pool_size")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def store_opener(backend: str, request, make_dir):
    """(open, close_all) for ``backend``; ``make_dir(name)`` gives the embedded store's folder."""
    from support.postgres import drop_schema, fresh_schema

    opened: list = []
    schemas: dict[str, str] = {}
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None

    def open_store(name: str = "data", **options):
        if backend == "embedded":
            store = EmbeddedStore(make_dir(name), **{k: v for k, v in options.items() if k not in _POSTGRES_ONLY})
        else:
            schema = schemas.setdefault(name, fresh_schema())
            store = PostgresStore(url, schema=schema,
                                  **{k: v for k, v in options.items() if k not in _EMBEDDED_ONLY})
        opened.append(store)
        return store

    def close_all():
        for store in opened:
            store.close()
        for schema in schemas.values():
            drop_schema(url, schema)

    return open_store, close_all


@pytest.fixture
def open_store(backend, request, tmp_path):
    opener, close_all = store_opener(backend, request, lambda name: tmp_path / name)
    yield opener
    close_all()
