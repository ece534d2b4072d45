"""Storage of collections, face records + vectors and UserIDs, behind ``FaceStore``.

``EmbeddedStore(data_dir)`` is the default backend (SQLite + in-memory exact index);
``PostgresStore(url)`` keeps everything in PostgreSQL with pgvector, for several servers
on one database. ``open_store`` chooses between them from a ``--database`` value.
"""

from __future__ import annotations

import os

from faceaudit.errors import (
    ConflictException,
    InvalidPaginationTokenException,
    ServiceQuotaExceededException,
)
from faceaudit.storage.base import (
    AssociationResult,
    Collection,
    FaceStore,
    StoredFace,
    UnsuccessfulFace,
    User,
)
from faceaudit.storage.embedded import EmbeddedStore
from faceaudit.storage.postgres import PostgresStore

EMBEDDED = "embedded"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: str | None) -> bool:
    return bool(database) and database.startswith(_POSTGRES_SCHEMES)  # type: ignore[union-attr]


def open_store(database: str | None, data_dir: str | os.PathLike, *, pool_size: int = 8) -> FaceStore:
    """The store ``--database`` / FACEAUDIT_DATABASE names: None or "embedded" is
    EmbeddedStore(data_dir); a postgresql:// URL is PostgresStore with ``pool_size``
    connections (one per request thread). ValueError for anything else."""
    if not database or database == EMBEDDED:
        return EmbeddedStore(data_dir)
    if is_postgres_url(database):
        return PostgresStore(database, pool_size=pool_size)
    raise ValueError(f"database {database!r}: 'embedded' or a postgresql://USER:PASSWORD@HOST/NAME URL")


__all__ = [
    "EMBEDDED",
    "AssociationResult",
    "Collection",
    "ConflictException",
    "EmbeddedStore",
    "FaceStore",
    "InvalidPaginationTokenException",
    "PostgresStore",
    "ServiceQuotaExceededException",
    "StoredFace",
    "UnsuccessfulFace",
    "User",
    "is_postgres_url",
    "open_store",
]
