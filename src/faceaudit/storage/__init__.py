"""Storage of collections, face records + vectors and UserIDs, behind ``FaceStore``.

``EmbeddedStore(data_dir)`` is the default backend (SQLite + in-memory exact index).
"""

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

__all__ = [
    "AssociationResult",
    "Collection",
    "ConflictException",
    "EmbeddedStore",
    "FaceStore",
    "InvalidPaginationTokenException",
    "ServiceQuotaExceededException",
    "StoredFace",
    "UnsuccessfulFace",
    "User",
]
