"""The users API: UserIDs that group several indexed faces of one person, and search by user.

ClientRequestToken is accepted and not used: every call here is one transaction,
so a retried CreateUser answers ConflictException rather than repeating silently.

UserMatchThreshold is scored exactly as face search's FaceMatchThreshold: through
one faceaudit.scoring.Scoring, score normalization included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceaudit.engine.base import FaceEngine
from faceaudit.errors import InvalidParameterException, ResourceNotFoundException
from faceaudit.images import load_image
from faceaudit.rekognition.collections import (
    collection_for,
    largest_searchable_face,
    similarity,
    threshold_to_distance,
)
from faceaudit.rekognition.faces import check_count, scoring_for
from faceaudit.scoring import Scoring
from faceaudit.storage import Collection, FaceStore, User
from faceaudit.storage.base import USER_ACTIVE

DEFAULT_ASSOCIATE_THRESHOLD = 75.0  # Rekognition's default UserMatchThreshold for AssociateFaces
DEFAULT_SEARCH_THRESHOLD = 80.0
DEFAULT_MAX_USERS = 100  # Rekognition documents no default; 100 is faceaudit's


def create_user(store: FaceStore, collection_id: str, user_id: str) -> dict[str, Any]:
    store.create_user(collection_id, user_id)
    return {}


def delete_user(store: FaceStore, collection_id: str, user_id: str) -> dict[str, Any]:
    store.delete_user(collection_id, user_id)
    return {}


def list_users(store: FaceStore, collection_id: str, max_results: int | None = None,
               next_token: str | None = None) -> dict[str, Any]:
    users, token = store.list_users(collection_id, next_token, max_results)
    response: dict[str, Any] = {"Users": [{"UserId": u.user_id, "UserStatus": u.user_status} for u in users]}
    if token:
        response["NextToken"] = token
    return response


def _unsuccessful(scoring: Scoring | None, failures) -> list[dict[str, Any]]:
    entries = []
    for failure in failures:
        entry: dict[str, Any] = {"FaceId": failure.face_id, "Reasons": list(failure.reasons)}
        if failure.user_id is not None:
            entry["UserId"] = failure.user_id
        if failure.distance is not None and scoring is not None:
            entry["Confidence"] = similarity(scoring, failure.distance)
        entries.append(entry)
    return entries


def associate_faces(engine: FaceEngine, store: FaceStore, collection_id: str, user_id: str, face_ids,
                    user_match_threshold=DEFAULT_ASSOCIATE_THRESHOLD, scoring: Scoring | None = None
                    ) -> dict[str, Any]:
    """AssociateFaces: a face joins a user that already has faces only if it matches one of them."""
    collection_for(engine, store, collection_id)
    scoring = scoring_for(engine, scoring)
    max_distance = threshold_to_distance(scoring, user_match_threshold, "UserMatchThreshold")
    # The store measures inside its write transaction; a normalized scoring lends it its distance.
    result = store.associate_faces(collection_id, user_id, face_ids, max_distance=max_distance,
                                   distances=scoring.distances if scoring.normalized else None)
    return {"AssociatedFaces": [{"FaceId": f} for f in result.changed],
            "UnsuccessfulFaceAssociations": _unsuccessful(scoring, result.unsuccessful),
            "UserStatus": result.user_status}


def disassociate_faces(engine: FaceEngine, store: FaceStore, collection_id: str, user_id: str, face_ids
                       ) -> dict[str, Any]:
    result = store.disassociate_faces(collection_id, user_id, face_ids)
    return {"DisassociatedFaces": [{"FaceId": f} for f in result.changed],
            "UnsuccessfulFaceDisassociations": _unsuccessful(None, result.unsuccessful),
            "UserStatus": result.user_status}


def _user_matches(scoring: Scoring, hits) -> list[dict[str, Any]]:
    return [{"Similarity": similarity(scoring, distance),
             "User": {"UserId": user.user_id, "UserStatus": user.user_status}} for user, distance in hits]


def _max_users(max_users) -> int:
    return check_count(max_users, "MaxUsers", DEFAULT_MAX_USERS, 500)


def nearest_users(scoring: Scoring, store: FaceStore, collection: Collection, vectors, limit: int,
                  max_distance: float | None, exclude_user_ids=()) -> list[tuple[User, float]]:
    """The ``limit`` users nearest to ``vectors`` (dim,) or (m, dim), exact, in ``scoring``'s distance.

    A user's distance is that of its closest face to the closest query row. With
    score normalization every face within each row's widened raw radius
    (Scoring.search_radius) is fetched and rescored, as nearest_faces does.
    """
    if not scoring.normalized:
        return store.search_users(collection.collection_id, vectors, limit, max_distance=max_distance,
                                  exclude_user_ids=exclude_user_ids)
    excluded = set(exclude_user_ids)
    best: dict[str, float] = {}
    for row in np.atleast_2d(np.asarray(vectors, dtype=np.float64)):
        hits = [(face, d) for face, d in store.search(
                    collection.collection_id, row.astype(np.float32), max(1, collection.face_count),
                    max_distance=scoring.search_radius(row, max_distance))
                if face.user_id is not None and face.user_id not in excluded]
        if not hits:
            continue
        rescored = scoring.distances(row, np.stack([face.vector for face, _ in hits]))[0]
        for (face, _), distance in zip(hits, rescored.tolist()):
            if face.user_id is not None and distance < best.get(face.user_id, np.inf):
                best[face.user_id] = distance
    ranked = sorted((distance, user_id) for user_id, distance in best.items()
                    if max_distance is None or distance <= max_distance)
    return [(User(user_id, USER_ACTIVE), distance) for distance, user_id in ranked[:limit]]


def search_users(engine: FaceEngine, store: FaceStore, collection_id: str, user_id: str | None = None,
                 face_id: str | None = None, user_match_threshold=DEFAULT_SEARCH_THRESHOLD,
                 max_users: int | None = None, scoring: Scoring | None = None) -> dict[str, Any]:
    """SearchUsers by one of: an indexed FaceId, or a UserId (all its faces; the user itself excluded)."""
    collection = collection_for(engine, store, collection_id)
    if (user_id is None) == (face_id is None):
        raise InvalidParameterException("SearchUsers needs exactly one of UserId and FaceId")
    scoring = scoring_for(engine, scoring)
    max_distance = threshold_to_distance(scoring, user_match_threshold, "UserMatchThreshold")
    limit = _max_users(max_users)
    response: dict[str, Any] = {"FaceModelVersion": engine.model_version}
    if face_id is not None:
        found = store.get_faces(collection_id, [face_id])
        if not found:
            raise ResourceNotFoundException(f"Face {face_id} is not in collection {collection_id}")
        hits = nearest_users(scoring, store, collection, found[0].vector, limit, max_distance)
        response["SearchedFace"] = {"FaceId": face_id}
    else:
        assert user_id is not None  # exactly one of the two, checked above
        store.get_user(collection_id, user_id)
        faces, _ = store.list_faces(collection_id, user_id=user_id)
        if not faces:
            raise InvalidParameterException(f"User {user_id} has no faces to search with")
        vectors = np.stack([f.vector for f in faces])
        hits = nearest_users(scoring, store, collection, vectors, limit, max_distance,
                             exclude_user_ids=[user_id])
        response["SearchedUser"] = {"UserId": user_id}
    response["UserMatches"] = _user_matches(scoring, hits)
    return response


def search_users_by_image(engine: FaceEngine, store: FaceStore, collection_id: str, image,
                          user_match_threshold=DEFAULT_SEARCH_THRESHOLD, max_users: int | None = None,
                          quality_filter: str | None = None, scoring: Scoring | None = None) -> dict[str, Any]:
    """SearchUsersByImage: the largest face of the image against the collection's users."""
    collection = collection_for(engine, store, collection_id)
    scoring = scoring_for(engine, scoring)
    max_distance = threshold_to_distance(scoring, user_match_threshold, "UserMatchThreshold")
    limit = _max_users(max_users)
    loaded = load_image(image)
    face, detail, others = largest_searchable_face(engine, loaded, quality_filter)
    vector = engine.embed(loaded, [face])[0]
    hits = nearest_users(scoring, store, collection, np.asarray(vector), limit, max_distance)
    return {"UserMatches": _user_matches(scoring, hits), "FaceModelVersion": engine.model_version,
            "SearchedFace": {"FaceDetail": detail}, "UnsearchedFaces": others}
