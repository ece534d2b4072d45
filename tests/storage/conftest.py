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
from storage_helpers import BACKENDS, store_opener


# Module scope: a module's tests run on one backend, then on the other, so module-scoped
# fixtures (test_storage_search's ``big``) follow the same parameter.
@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def open_store(backend, request, tmp_path):
    opener, close_all = store_opener(backend, request, lambda name: tmp_path / name)
    yield opener
    close_all()
