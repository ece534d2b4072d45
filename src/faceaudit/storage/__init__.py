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
from faceaudit.settings import NEVER_APPROXIMATE
from faceaudit.storage.base import (
    AssociationResult,
    Collection,
    FaceStore,
    StoredFace,
    UnsuccessfulFace,
    User,
)
from faceaudit.storage.embedded import DEFAULT_APPROXIMATE_THRESHOLD, ApproximateSearch, EmbeddedStore
from faceaudit.storage.postgres import PostgresStore

EMBEDDED = "embedded"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: str | None) -> bool:
    return bool(database) and database.startswith(_POSTGRES_SCHEMES)  # type: ignore[union-attr]


def open_store(database: str | None, data_dir: str | os.PathLike, *, pool_size: int = 8,
               approximate_above: int | str | None = None) -> FaceStore:
    """The store ``--database`` / FACEAUDIT_DATABASE names: None or "embedded" is
    EmbeddedStore(data_dir); a postgresql:// URL is PostgresStore with ``pool_size``
    connections (one per request thread). ValueError for anything else.

    ``approximate_above`` (``--approximate-above`` / FACEAUDIT_APPROXIMATE_ABOVE): collections
    in search mode "auto" with more than that many faces are searched through the backend's
    HNSW index; "never": always exactly; None: the backend's default (embedded from
    DEFAULT_APPROXIMATE_THRESHOLD faces, PostgreSQL never). A collection set to "exact" (the
    public-safety policy does) stays exact whatever it says."""
    never = approximate_above == NEVER_APPROXIMATE
    if not database or database == EMBEDDED:
        if approximate_above is None:
            return EmbeddedStore(data_dir)
        # the embedded threshold counts from: "above N" is from N + 1
        threshold = None if never else int(approximate_above) + 1
        return EmbeddedStore(data_dir, approximate=ApproximateSearch(threshold=threshold))
    if is_postgres_url(database):
        return PostgresStore(database, pool_size=pool_size,
                             approximate_above=None if never or approximate_above is None else int(approximate_above))
    raise ValueError(f"database {database!r}: 'embedded' or a postgresql://USER:PASSWORD@HOST/NAME URL")


def search_mode_note(database: str | None, approximate_above: int | str | None) -> str:
    """One line saying which search :func:`open_store` sets up for these values: the backend
    (never a URL: it may hold a password), when collections go approximate, and that the
    ones that must stay exact do (``faceaudit serve`` prints it at start)."""
    backend = "PostgreSQL" if is_postgres_url(database) else "embedded store"
    setting = "--approximate-above / FACEAUDIT_APPROXIMATE_ABOVE"
    if approximate_above == NEVER_APPROXIMATE:
        mode = f"exact in every collection ({setting}: never)"
    elif approximate_above is not None:
        above = int(approximate_above)
        mode = f"approximate (HNSW) in a collection of more than {above:,} faces, exact up to it ({setting}: {above})"
    elif is_postgres_url(database):
        mode = f"exact in every collection (the PostgreSQL default; {setting} N turns HNSW on above N faces)"
    else:
        mode = (f"approximate (HNSW) in a collection of {DEFAULT_APPROXIMATE_THRESHOLD:,} faces or more, exact below "
                f"(the embedded default; {setting} N|never changes it)")
    return f"search ({backend}): {mode}. Audits and public-safety collections stay exact."


__all__ = [
    "DEFAULT_APPROXIMATE_THRESHOLD",
    "EMBEDDED",
    "ApproximateSearch",
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
    "search_mode_note",
]
