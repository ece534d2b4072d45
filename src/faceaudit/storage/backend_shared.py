"""What EmbeddedStore and PostgresStore do the same way, apart from their SQL.

Each backend reads rows and writes changes in its own transactions; this module holds the
part of each operation that does not depend on the database, so that both backends check
their arguments, sort the faces asked for into changed and unsuccessful, rank search hits
and word their errors identically:

* ``check_*``: an operation's argument checks (the first bad argument is the one reported).
* ``sort_deletion``, ``sort_association``, ``sort_disassociation``: given the rows the
  backend found for the FaceIds asked for, which faces change (their row ``seq`` numbers,
  for the backend's UPDATE or DELETE) and which fail with which of Rekognition's reasons.
* ``ranked_face_rows``, ``ranked_users``: an index's hits cut to k, ties broken by FaceId
  (UserId for user search).
* ``TableStore``: DescribeCollection, ListCollections, ListFaces, getting faces by id and the
  UserID operations (CreateUser ... DisassociateFaces) whole, over a few statements each
  backend supplies.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from faceaudit.errors import (
    ConflictException,
    InvalidParameterException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from faceaudit.storage.base import (
    ASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,
    ASSOCIATE_FACE_NOT_FOUND,
    ASSOCIATE_LOW_MATCH_CONFIDENCE,
    DEFAULT_PAGE_SIZE,
    DEFAULT_USER_PAGE_SIZE,
    DELETE_ASSOCIATED_TO_AN_EXISTING_USER,
    DELETE_FACE_NOT_FOUND,
    DISASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,
    DISASSOCIATE_FACE_NOT_FOUND,
    FACE_ID_LIST_MAX,
    PAGE_SIZE_MAX,
    USER_ACTIVE,
    USER_CREATED,
    USER_FACE_ID_LIST_MAX,
    USER_PAGE_SIZE_MAX,
    AssociationResult,
    Collection,
    FaceStore,
    PairDistances,
    StoredFace,
    UnsuccessfulFace,
    User,
    as_query_vector,
    validate_collection_id,
    validate_face_id,
    validate_face_ids,
    validate_max_distance,
    validate_max_results,
    validate_new_face,
    validate_page_size,
    validate_user_id,
)
from faceaudit.storage.page_tokens import (
    KIND_COLLECTIONS,
    KIND_FACES,
    KIND_USERS,
    NO_FILTER,
    PageTokens,
    filter_digest,
)
from faceaudit.storage.vector_index import Hits


def user_status(has_faces: bool) -> str:
    """UserStatus: ACTIVE with faces, CREATED without (a change is one transaction)."""
    return USER_ACTIVE if has_faces else USER_CREATED


def collection_record(row) -> Collection:
    """A collection row (its ``collection_id``, ``arn``, ``face_model_version``, ``created_ms``,
    ``face_count``, ``user_count``) as a Collection."""
    return Collection(
        collection_id=row.collection_id, arn=row.arn, face_model_version=row.face_model_version,
        created=datetime.fromtimestamp(row.created_ms / 1000.0, tz=UTC),
        face_count=row.face_count, user_count=row.user_count)


# --- errors both backends raise with the same words -----------------------------

def collection_not_found(collection_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The collection id: {collection_id} does not exist")


def user_not_found(user_id: str, collection_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The user id: {user_id} does not exist in collection {collection_id}")


def user_exists(user_id: str, collection_id: str) -> ConflictException:
    return ConflictException(f"The user id: {user_id} already exists in collection {collection_id}")


# --- argument checks ----------------------------------------------------------------

def check_new_collection(collection_id, face_model_version) -> None:
    validate_collection_id(collection_id)
    if not isinstance(face_model_version, str) or not face_model_version:
        raise InvalidParameterException("FaceModelVersion must be a non-empty string")


class NewFaces(NamedTuple):
    """add_faces' faces, their vectors (little-endian float32) and their one dimension (None: no faces)."""

    faces: list[StoredFace]
    vectors: list[np.ndarray]
    dim: int | None


def check_new_faces(collection_id, faces: Iterable[StoredFace]) -> NewFaces:
    validate_collection_id(collection_id)
    faces = list(faces)
    vectors = [validate_new_face(face) for face in faces]
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise InvalidParameterException("the faces' vectors have different dimensions")
    if len({face.face_id for face in faces}) != len(faces):
        raise InvalidParameterException("the same FaceId appears twice")
    return NewFaces(faces, vectors, dims.pop() if dims else None)


def check_room(collection_id: str, collection_dim: int | None, face_count: int, new: NewFaces,
               max_faces_per_collection: int) -> None:
    """The new faces fit the collection: its vectors' dimension, and its face quota."""
    if collection_dim is not None and collection_dim != new.dim:
        raise InvalidParameterException(
            f"vectors of dimension {new.dim} cannot join collection {collection_id}, "
            f"whose vectors have dimension {collection_dim}")
    if face_count + len(new.faces) > max_faces_per_collection:
        raise ServiceQuotaExceededException(
            f"collection {collection_id} would exceed {max_faces_per_collection} faces")


def check_face_listing(collection_id, max_results, user_id, face_ids) -> tuple[int, list[str] | None, bytes]:
    """list_faces' page size, its FaceIds filter (or None), and the digest of its filters
    that its NextTokens carry."""
    validate_collection_id(collection_id)
    limit = validate_page_size(max_results, DEFAULT_PAGE_SIZE, PAGE_SIZE_MAX)
    if user_id is not None:
        validate_user_id(user_id)
    if face_ids is not None:
        face_ids = validate_face_ids(face_ids, FACE_ID_LIST_MAX)
    digest = NO_FILTER
    if user_id is not None or face_ids is not None:
        digest = filter_digest(json.dumps([user_id, sorted(face_ids) if face_ids is not None else None]))
    return limit, face_ids, digest


def check_wanted_faces(collection_id, face_ids) -> list[str]:
    """get_faces' FaceIds, each once, in the order asked (may be empty)."""
    validate_collection_id(collection_id)
    if isinstance(face_ids, str):
        raise InvalidParameterException("face_ids must be a list")
    face_ids = list(dict.fromkeys(face_ids))
    for face_id in face_ids:
        validate_face_id(face_id)
    return face_ids


def check_user_faces(collection_id, user_id, face_ids) -> list[str]:
    """Associate/DisassociateFaces' ids: the FaceIds (1-100), de-duplicated, order kept."""
    validate_collection_id(collection_id)
    validate_user_id(user_id)
    return validate_face_ids(face_ids, USER_FACE_ID_LIST_MAX)


class FaceQuery(NamedTuple):
    """search's arguments, checked."""

    vector: np.ndarray
    k: int
    max_distance: float | None
    exclude: list[str]
    user_ids: list[str] | None


def check_face_query(collection_id, vector, max_results, max_distance, exclude_face_ids,
                     user_ids) -> FaceQuery:
    validate_collection_id(collection_id)
    query = as_query_vector(vector)
    k = validate_max_results(max_results)
    max_distance = validate_max_distance(max_distance)
    exclude = [validate_face_id(f) for f in dict.fromkeys(exclude_face_ids or ())]
    wanted_users = None
    if user_ids is not None:
        if isinstance(user_ids, str):
            raise InvalidParameterException("user_ids must be a list")
        wanted_users = [validate_user_id(u) for u in dict.fromkeys(user_ids)]
    return FaceQuery(query, k, max_distance, exclude, wanted_users)


class UserQuery(NamedTuple):
    """search_users' arguments, checked: ``vector`` is (dim,) or (m, dim)."""

    vector: np.ndarray
    k: int
    max_distance: float | None
    exclude: list[str]


def check_user_query(collection_id, vector, max_results, max_distance, exclude_user_ids) -> UserQuery:
    validate_collection_id(collection_id)
    query = as_query_vector(vector, allow_matrix=True)
    k = validate_max_results(max_results, "MaxUsers")
    max_distance = validate_max_distance(max_distance)
    if isinstance(exclude_user_ids, str):
        raise InvalidParameterException("exclude_user_ids must be a list")
    excluded = [validate_user_id(u) for u in dict.fromkeys(exclude_user_ids or ())]
    return UserQuery(query, k, max_distance, excluded)


def check_query_dim(query: np.ndarray, dim: int | None) -> None:
    if query.shape[-1] != dim:
        raise InvalidParameterException(
            f"the query vector has dimension {query.shape[-1]}; the collection's vectors "
            f"have dimension {dim}")


# --- which faces an operation changes ----------------------------------------------

class FaceOwner(NamedTuple):
    """A face Associate/DisassociateFaces asked for: its row, the row of the UserID it is
    associated with (None: none) and that UserID, and its vector (float32)."""

    seq: int
    owner: int | None
    owner_name: str | None
    vector: np.ndarray


class FaceChange(NamedTuple):
    """The FaceIds an operation applies to, the rows the backend changes, and the failures."""

    changed: list[str]
    seqs: list[int]
    unsuccessful: list[UnsuccessfulFace]

    def result(self, has_faces: bool) -> AssociationResult:
        """As associate_faces / disassociate_faces answer, the UserID having faces or not afterwards."""
        return AssociationResult(self.changed, self.unsuccessful, user_status(has_faces))


def sort_deletion(face_ids: Sequence[str], found: Mapping[str, tuple[int, str | None]]) -> FaceChange:
    """DeleteFaces: ``found`` maps each FaceId present to (seq, its UserID or None). A face
    associated with a UserID is kept (ASSOCIATED_TO_AN_EXISTING_USER), as Rekognition does."""
    deleted: list[str] = []
    doomed: list[int] = []
    unsuccessful: list[UnsuccessfulFace] = []
    for face_id in face_ids:
        if face_id not in found:
            unsuccessful.append(UnsuccessfulFace(face_id, (DELETE_FACE_NOT_FOUND,)))
            continue
        seq, user = found[face_id]
        if user is not None:
            unsuccessful.append(UnsuccessfulFace(
                face_id, (DELETE_ASSOCIATED_TO_AN_EXISTING_USER,), user_id=user))
            continue
        deleted.append(face_id)
        doomed.append(seq)
    return FaceChange(deleted, doomed, unsuccessful)


def sort_association(user_id: str, user_ref: Any, face_ids: Sequence[str], found: Mapping[str, FaceOwner],
                     existing: np.ndarray, max_distance: float | None, distances: PairDistances | None,
                     max_faces_per_user: int) -> FaceChange:
    """AssociateFaces for the UserID ``user_id`` (row ``user_ref``), whose faces' vectors are
    ``existing`` (n, dim). ServiceQuotaExceededException if it would pass its face quota."""
    existing_matrix = existing.astype(np.float64) if len(existing) else None
    associated: list[str] = []
    to_link: list[int] = []
    unsuccessful: list[UnsuccessfulFace] = []
    for face_id in face_ids:
        if face_id not in found:
            unsuccessful.append(UnsuccessfulFace(face_id, (ASSOCIATE_FACE_NOT_FOUND,)))
            continue
        seq, owner, owner_name, face_vector = found[face_id]
        if owner == user_ref:
            continue  # already this user's: ignored, as Rekognition does
        if owner is not None:
            unsuccessful.append(UnsuccessfulFace(
                face_id, (ASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,), user_id=owner_name))
            continue
        if max_distance is not None and existing_matrix is not None:
            vector = face_vector.astype(np.float64)
            if distances is None:
                distance = float(np.sqrt(((existing_matrix - vector) ** 2).sum(axis=1)).min())
            else:
                distance = float(np.min(distances(vector[None, :], existing_matrix)))
            if distance > max_distance:
                unsuccessful.append(UnsuccessfulFace(
                    face_id, (ASSOCIATE_LOW_MATCH_CONFIDENCE,), user_id=None, distance=distance))
                continue
        associated.append(face_id)
        to_link.append(seq)
    if len(existing) + len(to_link) > max_faces_per_user and to_link:
        raise ServiceQuotaExceededException(f"user {user_id} would have more than {max_faces_per_user} faces")
    return FaceChange(associated, to_link, unsuccessful)


def sort_disassociation(user_ref: Any, face_ids: Sequence[str], found: Mapping[str, FaceOwner]) -> FaceChange:
    """DisassociateFaces from the UserID of row ``user_ref``: faces with no UserID are ignored."""
    disassociated: list[str] = []
    to_unlink: list[int] = []
    unsuccessful: list[UnsuccessfulFace] = []
    for face_id in face_ids:
        if face_id not in found:
            unsuccessful.append(UnsuccessfulFace(face_id, (DISASSOCIATE_FACE_NOT_FOUND,)))
            continue
        face = found[face_id]
        if face.owner is None:
            continue  # already disassociated: ignored
        if face.owner != user_ref:
            unsuccessful.append(UnsuccessfulFace(
                face_id, (DISASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,), user_id=face.owner_name))
            continue
        disassociated.append(face_id)
        to_unlink.append(face.seq)
    return FaceChange(disassociated, to_unlink, unsuccessful)


# --- ranking ------------------------------------------------------------------------

def ranked_face_rows(hits: Hits, rows_by_seq: Mapping[int, Sequence], k: int) -> list[tuple[Sequence, float]]:
    """The first k (row, distance) of ``hits``, ties (equal distances) in FaceId order; a
    row's item 1 is its FaceId. The index returned every row tied with the k-th."""
    scored = sorted((distance, rows_by_seq[seq][1], seq)
                    for seq, distance in zip(hits.ids.tolist(), hits.distances.tolist()))
    return [(rows_by_seq[seq], distance) for distance, _, seq in scored[:k]]


def ranked_users(hits: Hits, names: Mapping[int, str], k: int) -> list[tuple[User, float]]:
    """The first k (UserID, distance) of user-search ``hits`` (ids: user rows), ties by UserId."""
    scored = sorted((distance, names[ref]) for ref, distance in zip(hits.ids.tolist(), hits.distances.tolist()))
    return [(User(name, USER_ACTIVE), distance) for distance, name in scored[:k]]


# --- the user operations, over each backend's SQL ------------------------------------

class TableStore(FaceStore):
    """A FaceStore on tables of collections, users and faces (EmbeddedStore, PostgresStore).

    The reads of collections and faces and the UserID operations are written here once; a
    backend supplies its transactions (``_read``, ``_write``), its collection and UserID
    lookups, its NextTokens (``_tokens``) and the few statements below, each a hook that
    only runs SQL.
    """

    _tokens: PageTokens
    _max_faces_per_user: int

    # what each backend provides

    @abc.abstractmethod
    def _collections_after(self, conn, after: int, limit: int) -> list[Any]:
        """Up to ``limit`` collection rows above row ``after``, in order."""

    @abc.abstractmethod
    def _faces_after(self, conn, coll, after: int, limit: int, user_ref: int | None,
                     face_ids: list[str] | None) -> list[tuple[int, StoredFace]]:
        """Up to ``limit`` (seq, face) of the collection above seq ``after``, in order; only the
        UserID of row ``user_ref``'s and only ``face_ids`` when given."""

    @abc.abstractmethod
    def _faces_by_id(self, conn, coll, face_ids: list[str]) -> list[StoredFace]:
        """The collection's faces among ``face_ids`` (non-empty), in any order."""

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A read transaction: every statement in it sees one snapshot."""

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """One write transaction."""

    @abc.abstractmethod
    def _collection(self, conn, collection_id: str, *, lock: bool = False) -> Any:
        """The collection's row (``id``, ``collection_id``, ``vector_dim``...); ``lock``: for a
        write, serialised with the collection's other writes. ResourceNotFoundException if absent."""

    @abc.abstractmethod
    def _user_rowid(self, conn, coll, user_id: str) -> int:
        """The UserID's row id; ResourceNotFoundException (user_not_found) if absent."""

    @abc.abstractmethod
    def _insert_user(self, conn, coll, user_id: str) -> None:
        """Add the UserID and count it; ConflictException (user_exists) if it is there."""

    @abc.abstractmethod
    def _remove_user(self, conn, coll, user_ref: int) -> None:
        """Disassociate the UserID's faces, delete it and count it out."""

    @abc.abstractmethod
    def _user_has_faces(self, conn, user_ref: int) -> bool: ...

    @abc.abstractmethod
    def _users_after(self, conn, coll, after: int, limit: int) -> list[tuple[int, str, bool]]:
        """Up to ``limit`` (row id, UserId, has faces) of the collection above row ``after``, in order."""

    @abc.abstractmethod
    def _user_vectors(self, conn, coll, user_ref: int) -> np.ndarray:
        """The vectors (n, dim), float32, of the UserID's faces."""

    @abc.abstractmethod
    def _faces_for_users_op(self, conn, coll, face_ids: list[str]) -> dict[str, FaceOwner]:
        """The faces among ``face_ids`` that exist, by FaceId."""

    @abc.abstractmethod
    def _set_user(self, conn, coll, user_ref: int | None, seqs: list[int]) -> None:
        """Associate the faces of rows ``seqs`` with the UserID of row ``user_ref`` (None: with none)."""

    # the operations

    def describe_collection(self, collection_id: str) -> Collection:
        validate_collection_id(collection_id)
        with self._read() as conn:
            return self._collection(conn, collection_id).to_collection()

    def list_collections_detailed(self, next_token=None, max_results=None):
        limit = validate_page_size(max_results, DEFAULT_PAGE_SIZE, PAGE_SIZE_MAX)
        after = self._tokens.after(next_token, KIND_COLLECTIONS, 0)
        with self._read() as conn:
            rows = self._collections_after(conn, after, limit + 1)
        token = self._tokens.issue(KIND_COLLECTIONS, 0, rows[limit - 1].id) if len(rows) > limit else None
        return [r.to_collection() for r in rows[:limit]], token

    def list_faces(self, collection_id, next_token=None, max_results=None, user_id=None,
                   face_ids=None):
        limit, face_ids, digest = check_face_listing(collection_id, max_results, user_id, face_ids)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            after = self._tokens.after(next_token, KIND_FACES, coll.id, digest)
            user_ref = None if user_id is None else self._user_rowid(conn, coll, user_id)
            rows = self._faces_after(conn, coll, after, limit + 1, user_ref, face_ids)
        token = self._tokens.issue(KIND_FACES, coll.id, rows[limit - 1][0], digest) if len(rows) > limit else None
        return [face for _, face in rows[:limit]], token

    def get_faces(self, collection_id, face_ids):
        face_ids = check_wanted_faces(collection_id, face_ids)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            if not face_ids:
                return []
            found = {face.face_id: face for face in self._faces_by_id(conn, coll, face_ids)}
        return [found[f] for f in face_ids if f in found]

    def create_user(self, collection_id, user_id):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        with self._write() as conn:
            self._insert_user(conn, self._collection(conn, collection_id, lock=True), user_id)
        return User(user_id, USER_CREATED)

    def get_user(self, collection_id, user_id):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        with self._read() as conn:
            rowid = self._user_rowid(conn, self._collection(conn, collection_id), user_id)
            return User(user_id, user_status(self._user_has_faces(conn, rowid)))

    def delete_user(self, collection_id, user_id):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            self._remove_user(conn, coll, self._user_rowid(conn, coll, user_id))

    def list_users(self, collection_id, next_token=None, max_results=None):
        validate_collection_id(collection_id)
        limit = validate_page_size(max_results, DEFAULT_USER_PAGE_SIZE, USER_PAGE_SIZE_MAX)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            rows = self._users_after(conn, coll, self._tokens.after(next_token, KIND_USERS, coll.id), limit + 1)
        token = self._tokens.issue(KIND_USERS, coll.id, rows[limit - 1][0]) if len(rows) > limit else None
        return [User(name, user_status(bool(has))) for _, name, has in rows[:limit]], token

    def associate_faces(self, collection_id, user_id, face_ids, max_distance=None, distances=None):
        face_ids = check_user_faces(collection_id, user_id, face_ids)
        max_distance = validate_max_distance(max_distance)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rowid = self._user_rowid(conn, coll, user_id)
            existing = self._user_vectors(conn, coll, rowid)
            change = sort_association(user_id, rowid, face_ids, self._faces_for_users_op(conn, coll, face_ids),
                                      existing, max_distance, distances, self._max_faces_per_user)
            if change.seqs:
                self._set_user(conn, coll, rowid, change.seqs)
        return change.result(len(existing) > 0 or bool(change.seqs))

    def disassociate_faces(self, collection_id, user_id, face_ids):
        face_ids = check_user_faces(collection_id, user_id, face_ids)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rowid = self._user_rowid(conn, coll, user_id)
            change = sort_disassociation(rowid, face_ids, self._faces_for_users_op(conn, coll, face_ids))
            if change.seqs:
                self._set_user(conn, coll, None, change.seqs)
            return change.result(self._user_has_faces(conn, rowid))
