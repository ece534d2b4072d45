"""The storage interface: collections, face records with their vectors, users.

Everything above this layer (the Rekognition operations, the HTTP server) talks
to a :class:`FaceStore`; nothing below it knows about images, HTTP or models.
A store keeps face *vectors* and metadata, never images.

Vocabulary and error behaviour follow Amazon Rekognition's service model
(botocore ``rekognition/2016-06-27``):

* Misuse raises the exception Rekognition would: ``InvalidParameterException``
  for malformed ids and out-of-range limits, ``ResourceNotFoundException`` for a
  missing collection or UserID, ``ResourceAlreadyExistsException`` for
  CreateCollection on an existing id, ``ConflictException`` for CreateUser on an
  existing UserID, ``InvalidPaginationTokenException`` for a NextToken this store
  did not issue for that listing, ``ServiceQuotaExceededException`` for the
  faces-per-collection and faces-per-UserID limits.
* Per-face failures that Rekognition reports inside a successful response
  (DeleteFaces' UnsuccessfulFaceDeletions, AssociateFaces'
  UnsuccessfulFaceAssociations, DisassociateFaces'
  UnsuccessfulFaceDisassociations) are returned as :class:`UnsuccessfulFace`
  with Rekognition's reason strings.

Distances are Euclidean distances between embedding vectors; turning them into
Rekognition's 0-100 Similarity is the caller's business
(``faceaudit.similarity``).
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np

from faceaudit.errors import InvalidParameterException

# --- Rekognition's enums -----------------------------------------------------

# UserStatus. This store applies every change in one transaction, so a UserID is
# never seen half-updated: it is ACTIVE when it has faces and CREATED when it has
# none. UPDATING and CREATING never occur here.
USER_ACTIVE = "ACTIVE"
USER_UPDATING = "UPDATING"
USER_CREATING = "CREATING"
USER_CREATED = "CREATED"

# UnsuccessfulFaceDeletionReason
DELETE_ASSOCIATED_TO_AN_EXISTING_USER = "ASSOCIATED_TO_AN_EXISTING_USER"
DELETE_FACE_NOT_FOUND = "FACE_NOT_FOUND"
# UnsuccessfulFaceAssociationReason
ASSOCIATE_FACE_NOT_FOUND = "FACE_NOT_FOUND"
ASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER = "ASSOCIATED_TO_A_DIFFERENT_USER"
ASSOCIATE_LOW_MATCH_CONFIDENCE = "LOW_MATCH_CONFIDENCE"
# UnsuccessfulFaceDisassociationReason
DISASSOCIATE_FACE_NOT_FOUND = "FACE_NOT_FOUND"
DISASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER = "ASSOCIATED_TO_A_DIFFERENT_USER"

# --- Rekognition's limits ----------------------------------------------------

COLLECTION_ID_PATTERN = re.compile(r"[a-zA-Z0-9_.\-]+")
COLLECTION_ID_MAX = 255
USER_ID_PATTERN = re.compile(r"[a-zA-Z0-9_.\-:]+")
USER_ID_MAX = 128
EXTERNAL_IMAGE_ID_PATTERN = re.compile(r"[a-zA-Z0-9_.\-:]+")
EXTERNAL_IMAGE_ID_MAX = 255
# FaceId and ImageId: Rekognition's pattern (lower-case UUID).
FACE_ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

PAGE_SIZE_MAX = 4096          # PageSize (ListCollections, ListFaces): max 4096
DEFAULT_PAGE_SIZE = 1000      # this store's choice when MaxResults is absent
USER_PAGE_SIZE_MAX = 500      # MaxUserResults (ListUsers, SearchUsers): 1-500
DEFAULT_USER_PAGE_SIZE = 500
FACE_ID_LIST_MAX = 4096       # FaceIdList (DeleteFaces, ListFaces' filter): 1-4096
USER_FACE_ID_LIST_MAX = 100   # UserFaceIdList (AssociateFaces, DisassociateFaces): 1-100
MAX_FACES_PER_USER = 100      # "the total number of faces ... associated with a single UserID is also limited to 100"
MAX_FACES_PER_COLLECTION = 20_000_000  # Rekognition's published collection quota

BOUNDING_BOX_KEYS = ("Width", "Height", "Left", "Top")

# How a collection is searched (FaceStore.set_search_mode): "exact" always scans every face;
# "approximate" asks an ANN index for candidates and measures them exactly; "auto" (the
# default) is exact until the collection is large enough for exact search to be slow.
# Audits and public-safety collections use "exact": an ANN index's misses need not fall
# evenly across demographic groups.
SEARCH_EXACT = "exact"
SEARCH_APPROXIMATE = "approximate"
SEARCH_AUTO = "auto"
SEARCH_MODES = (SEARCH_EXACT, SEARCH_APPROXIMATE, SEARCH_AUTO)

#: Distances between the rows of two matrices of vectors, (n, d) and (m, d) -> (n, m).
PairDistances = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --- records -------------------------------------------------------------------

@dataclass(frozen=True)
class Collection:
    collection_id: str
    arn: str
    face_model_version: str
    created: datetime          # timezone-aware UTC, millisecond precision
    face_count: int
    user_count: int


@dataclass(eq=False)
class StoredFace:
    """One indexed face: Rekognition's Face shape plus its embedding.

    ``face_id`` and ``image_id`` are lower-case UUID strings made by the caller.
    ``user_id`` is set by the store (associate_faces); pass None to add_faces.
    """

    face_id: str
    image_id: str
    external_image_id: str | None
    bounding_box: dict[str, float]
    confidence: float
    index_faces_model_version: str
    user_id: str | None
    vector: np.ndarray = field(repr=False)   # float32, shape (dim,)

    def __eq__(self, other):
        if not isinstance(other, StoredFace):
            return NotImplemented
        return (
            self.face_id == other.face_id
            and self.image_id == other.image_id
            and self.external_image_id == other.external_image_id
            and self.bounding_box == other.bounding_box
            and self.confidence == other.confidence
            and self.index_faces_model_version == other.index_faces_model_version
            and self.user_id == other.user_id
            and np.array_equal(np.asarray(self.vector, np.float32), np.asarray(other.vector, np.float32))
        )

    __hash__ = None  # type: ignore[assignment]  # a mutable record is not hashable


@dataclass(frozen=True)
class User:
    user_id: str
    user_status: str


@dataclass(frozen=True)
class UnsuccessfulFace:
    """A face an operation did not apply to, and why (Rekognition's reason strings).

    ``user_id`` is the UserID the face is currently associated with, if any (the
    one that blocked a deletion or an association). ``distance`` is set for
    LOW_MATCH_CONFIDENCE: the face's distance to the UserID's closest face.
    """

    face_id: str
    reasons: tuple[str, ...]
    user_id: str | None = None
    distance: float | None = None


class AssociationResult(NamedTuple):
    """associate_faces / disassociate_faces: face ids changed, failures, resulting UserStatus."""

    changed: list[str]
    unsuccessful: list[UnsuccessfulFace]
    user_status: str


# --- validation shared by backends ----------------------------------------------

def _invalid(message: str) -> InvalidParameterException:
    return InvalidParameterException(message)


def validate_collection_id(collection_id) -> str:
    if (not isinstance(collection_id, str) or not 1 <= len(collection_id) <= COLLECTION_ID_MAX
            or not COLLECTION_ID_PATTERN.fullmatch(collection_id)):
        raise _invalid(
            f"CollectionId {collection_id!r} must be 1-{COLLECTION_ID_MAX} characters "
            "matching [a-zA-Z0-9_.\\-]+")
    return collection_id


def validate_user_id(user_id) -> str:
    if (not isinstance(user_id, str) or not 1 <= len(user_id) <= USER_ID_MAX
            or not USER_ID_PATTERN.fullmatch(user_id)):
        raise _invalid(
            f"UserId {user_id!r} must be 1-{USER_ID_MAX} characters matching [a-zA-Z0-9_.\\-:]+")
    return user_id


def validate_face_id(face_id, what: str = "FaceId") -> str:
    if not isinstance(face_id, str) or not FACE_ID_PATTERN.fullmatch(face_id):
        raise _invalid(f"{what} {face_id!r} is not a valid id (lower-case UUID)")
    return face_id


def validate_face_ids(face_ids, limit: int, what: str = "FaceIds") -> list[str]:
    """A non-empty list of at most ``limit`` valid face ids, de-duplicated, order kept."""
    if isinstance(face_ids, str) or not isinstance(face_ids, Iterable):
        raise _invalid(f"{what} must be a list of face ids")
    ids = list(face_ids)
    if not 1 <= len(ids) <= limit:
        raise _invalid(f"{what} must hold between 1 and {limit} face ids, got {len(ids)}")
    for face_id in ids:
        validate_face_id(face_id)
    return list(dict.fromkeys(ids))


def validate_page_size(max_results, default: int, limit: int, what: str = "MaxResults") -> int:
    """None means ``default``; otherwise an int in 1..limit."""
    if max_results is None:
        return default
    if isinstance(max_results, bool) or not isinstance(max_results, (int, np.integer)):
        raise _invalid(f"{what} must be an integer")
    if not 1 <= int(max_results) <= limit:
        raise _invalid(f"{what} must be between 1 and {limit}, got {max_results}")
    return int(max_results)


def validate_max_results(max_results, what: str = "MaxFaces") -> int:
    if isinstance(max_results, bool) or not isinstance(max_results, (int, np.integer)) or max_results < 1:
        raise _invalid(f"{what} must be a positive integer, got {max_results!r}")
    return int(max_results)


def validate_max_distance(max_distance) -> float | None:
    if max_distance is None:
        return None
    try:
        value = float(max_distance)
    except (TypeError, ValueError):
        raise _invalid(f"max_distance must be a number, got {max_distance!r}") from None
    if math.isnan(value) or value < 0:
        raise _invalid(f"max_distance must be >= 0, got {max_distance!r}")
    return value


def validate_search_mode(mode) -> str:
    if mode not in SEARCH_MODES:
        raise _invalid(f"the search mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
    return mode


def as_query_vector(vector, allow_matrix: bool = False) -> np.ndarray:
    """The query as float32 (dim,) - or (m, dim) when ``allow_matrix`` - finite values only."""
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        raise _invalid("the query vector must be numeric") from None
    if array.ndim == 2 and allow_matrix:
        if array.shape[0] < 1 or array.shape[1] < 1:
            raise _invalid("the query matrix must be non-empty")
    elif array.ndim != 1 or array.shape[0] < 1:
        raise _invalid(f"the query vector must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise _invalid("the query vector holds NaN or infinite values")
    return array


def validate_new_face(face: StoredFace) -> np.ndarray:
    """Check one face for add_faces; returns its vector as little-endian float32 (dim,)."""
    if not isinstance(face, StoredFace):
        raise _invalid(f"expected a StoredFace, got {type(face).__name__}")
    validate_face_id(face.face_id)
    validate_face_id(face.image_id, "ImageId")
    if face.external_image_id is not None and (
            not isinstance(face.external_image_id, str)
            or not 1 <= len(face.external_image_id) <= EXTERNAL_IMAGE_ID_MAX
            or not EXTERNAL_IMAGE_ID_PATTERN.fullmatch(face.external_image_id)):
        raise _invalid(
            f"ExternalImageId {face.external_image_id!r} must be 1-{EXTERNAL_IMAGE_ID_MAX} "
            "characters matching [a-zA-Z0-9_.\\-:]+")
    if face.user_id is not None:
        raise _invalid("new faces cannot carry a UserId; use associate_faces")
    box = face.bounding_box
    if not isinstance(box, dict) or set(box) != set(BOUNDING_BOX_KEYS):
        raise _invalid(f"BoundingBox must have exactly the keys {BOUNDING_BOX_KEYS}")
    for key in BOUNDING_BOX_KEYS:
        if not isinstance(box[key], (int, float, np.floating)) or not math.isfinite(box[key]):
            raise _invalid(f"BoundingBox {key} must be a finite number")
    if not isinstance(face.confidence, (int, float, np.floating)) or not math.isfinite(face.confidence):
        raise _invalid("Confidence must be a finite number")
    if not isinstance(face.index_faces_model_version, str) or not face.index_faces_model_version:
        raise _invalid("IndexFacesModelVersion must be a non-empty string")
    try:
        vector = np.asarray(face.vector, dtype="<f4")
    except (TypeError, ValueError):
        raise _invalid(f"face {face.face_id}: the vector must be numeric") from None
    if vector.ndim != 1 or vector.shape[0] < 1:
        raise _invalid(f"face {face.face_id}: the vector must be one-dimensional")
    if not np.all(np.isfinite(vector)):
        raise _invalid(f"face {face.face_id}: the vector holds NaN or infinite values")
    return vector


# --- the interface ------------------------------------------------------------

class FaceStore(abc.ABC):
    """Collections of face records + vectors, UserIDs, and exact nearest-neighbour search.

    Every method validates its ids (InvalidParameterException) and raises
    ResourceNotFoundException when the collection does not exist. Every write
    is atomic: it happens entirely or not at all.
    """

    # collections

    @abc.abstractmethod
    def create_collection(self, collection_id: str, face_model_version: str) -> Collection:
        """New empty collection. ResourceAlreadyExistsException if the id is taken."""

    @abc.abstractmethod
    def describe_collection(self, collection_id: str) -> Collection:
        """The collection with its current face and user counts."""

    @abc.abstractmethod
    def list_collections_detailed(self, next_token: str | None = None,
                                  max_results: int | None = None
                                  ) -> tuple[list[Collection], str | None]:
        """A page of collections in creation order; next_token None on the last page."""

    def list_collections(self, next_token: str | None = None,
                         max_results: int | None = None) -> tuple[list[str], str | None]:
        """A page of collection ids (ListCollections). See list_collections_detailed."""
        collections, token = self.list_collections_detailed(next_token, max_results)
        return [c.collection_id for c in collections], token

    @abc.abstractmethod
    def delete_collection(self, collection_id: str) -> None:
        """Remove the collection with all its faces and users."""

    # faces

    @abc.abstractmethod
    def add_faces(self, collection_id: str, faces: Sequence[StoredFace]) -> None:
        """Store the faces, all or none.

        InvalidParameterException for a malformed face, a face_id already in
        the collection (or twice in ``faces``) or a vector whose dimension
        differs from the collection's; ServiceQuotaExceededException past the
        collection's face quota.
        """

    @abc.abstractmethod
    def list_faces(self, collection_id: str, next_token: str | None = None,
                   max_results: int | None = None, user_id: str | None = None,
                   face_ids: Sequence[str] | None = None
                   ) -> tuple[list[StoredFace], str | None]:
        """A page of faces in insertion order, optionally only ``user_id``'s / ``face_ids``.

        Tokens are opaque and tied to the collection and filters. Across the
        pages of one listing every face present throughout appears exactly
        once, whatever is added or deleted in between; faces added meanwhile
        appear (once) on a later page. ResourceNotFoundException for an unknown
        ``user_id``; InvalidPaginationTokenException for a foreign token.
        """

    @abc.abstractmethod
    def get_faces(self, collection_id: str, face_ids: Sequence[str]) -> list[StoredFace]:
        """The faces that exist among ``face_ids``, in the order asked, each once."""

    @abc.abstractmethod
    def delete_faces(self, collection_id: str, face_ids: Sequence[str]
                     ) -> tuple[list[str], list[UnsuccessfulFace]]:
        """Delete faces; returns (deleted ids, failures).

        A face that is not there fails with FACE_NOT_FOUND; a face associated
        with a UserID is kept and fails with ASSOCIATED_TO_AN_EXISTING_USER
        (disassociate it first), as Rekognition's DeleteFaces does.
        """

    # search

    @abc.abstractmethod
    def search(self, collection_id: str, vector, max_results: int,
               max_distance: float | None = None, exclude_face_ids: Iterable[str] = (),
               user_ids: Iterable[str] | None = None) -> list[tuple[StoredFace, float]]:
        """Exact Euclidean nearest neighbours of ``vector``: (face, distance) ascending.

        Ties are broken by face_id. At most ``max_results``; only distances
        <= ``max_distance`` when given; never the ``exclude_face_ids``; only
        faces of ``user_ids`` when given (unknown UserIDs match nothing).
        An empty collection gives []. InvalidParameterException if the
        vector's dimension differs from the collection's.
        """

    @abc.abstractmethod
    def search_users(self, collection_id: str, vector, max_results: int,
                     max_distance: float | None = None,
                     exclude_user_ids: Iterable[str] = ()) -> list[tuple[User, float]]:
        """UserIDs ranked by the distance of their closest face to ``vector``.

        ``vector`` may be (dim,) or (m, dim); with several rows a user's
        distance is the smallest over all (query row, user face) pairs - pass a
        UserID's own vectors (and exclude it) to search by UserId. Ties are
        broken by user_id. Users without faces never match.
        """

    def search_mode(self, collection_id: str) -> str:
        """The collection's search mode (one of SEARCH_MODES). A store without an approximate
        index searches every collection exactly."""
        self.describe_collection(collection_id)  # ResourceNotFoundException for an unknown one
        return SEARCH_EXACT

    def set_search_mode(self, collection_id: str, mode: str) -> None:
        """Keep ``mode`` with the collection: later searches, from any process, follow it.
        A store without an approximate index accepts "exact" only."""
        validate_search_mode(mode)
        self.describe_collection(collection_id)
        if mode != SEARCH_EXACT:
            raise _invalid(f"{type(self).__name__} searches exactly only")

    # users

    @abc.abstractmethod
    def create_user(self, collection_id: str, user_id: str) -> User:
        """New UserID (status CREATED). ConflictException if it exists."""

    @abc.abstractmethod
    def delete_user(self, collection_id: str, user_id: str) -> None:
        """Disassociate the UserID's faces (they stay in the collection), then delete it.

        ResourceNotFoundException if the UserID does not exist.
        """

    @abc.abstractmethod
    def list_users(self, collection_id: str, next_token: str | None = None,
                   max_results: int | None = None) -> tuple[list[User], str | None]:
        """A page of UserIDs in creation order (max_results 1-500)."""

    @abc.abstractmethod
    def associate_faces(self, collection_id: str, user_id: str, face_ids: Sequence[str],
                        max_distance: float | None = None,
                        distances: PairDistances | None = None) -> AssociationResult:
        """Associate 1-100 faces with an existing UserID.

        ``changed`` holds the newly associated face ids; faces already with
        this UserID are ignored (in neither list). Failures: FACE_NOT_FOUND,
        ASSOCIATED_TO_A_DIFFERENT_USER, and - when ``max_distance`` is given
        (UserMatchThreshold converted to a distance) and the UserID already had
        faces before the call - LOW_MATCH_CONFIDENCE for a face farther than
        that from all of them. ``distances(a, b)`` -> (n, m) measures them
        (default Euclidean; a normalized faceaudit.scoring.Scoring passes its own),
        inside the same transaction as the change. ResourceNotFoundException for an unknown UserID;
        ServiceQuotaExceededException (and nothing changes) if the UserID would
        pass 100 faces.
        """

    @abc.abstractmethod
    def disassociate_faces(self, collection_id: str, user_id: str,
                           face_ids: Sequence[str]) -> AssociationResult:
        """Remove 1-100 faces from a UserID.

        Faces with no UserID are ignored; FACE_NOT_FOUND and
        ASSOCIATED_TO_A_DIFFERENT_USER are failures.
        """

    @abc.abstractmethod
    def get_user(self, collection_id: str, user_id: str) -> User:
        """The UserID with its status; ResourceNotFoundException if absent."""

    def close(self) -> None:  # noqa: B027 (optional: a store without resources has nothing to close)
        """Release resources (connections). The store is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
