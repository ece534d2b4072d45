"""The users API: UserIDs that group several indexed faces of one person, and search by user.

ClientRequestToken is accepted and not used: every call here is one transaction,
so a retried CreateUser answers ConflictException rather than repeating silently.
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
from faceaudit.rekognition.faces import check_count
from faceaudit.storage import FaceStore

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


def _unsuccessful(engine: FaceEngine, failures) -> list[dict[str, Any]]:
    entries = []
    for failure in failures:
        entry: dict[str, Any] = {"FaceId": failure.face_id, "Reasons": list(failure.reasons)}
        if failure.user_id is not None:
            entry["UserId"] = failure.user_id
        if failure.distance is not None:
            entry["Confidence"] = similarity(engine, failure.distance)
        entries.append(entry)
    return entries


def associate_faces(engine: FaceEngine, store: FaceStore, collection_id: str, user_id: str, face_ids,
                    user_match_threshold=DEFAULT_ASSOCIATE_THRESHOLD) -> dict[str, Any]:
    """AssociateFaces: a face joins a user that already has faces only if it matches one of them."""
    collection_for(engine, store, collection_id)
    max_distance = threshold_to_distance(engine, user_match_threshold, "UserMatchThreshold")
    result = store.associate_faces(collection_id, user_id, face_ids, max_distance=max_distance)
    return {"AssociatedFaces": [{"FaceId": f} for f in result.changed],
            "UnsuccessfulFaceAssociations": _unsuccessful(engine, result.unsuccessful),
            "UserStatus": result.user_status}


def disassociate_faces(engine: FaceEngine, store: FaceStore, collection_id: str, user_id: str, face_ids
                       ) -> dict[str, Any]:
    result = store.disassociate_faces(collection_id, user_id, face_ids)
    return {"DisassociatedFaces": [{"FaceId": f} for f in result.changed],
            "UnsuccessfulFaceDisassociations": _unsuccessful(engine, result.unsuccessful),
            "UserStatus": result.user_status}


def _user_matches(engine: FaceEngine, hits) -> list[dict[str, Any]]:
    return [{"Similarity": similarity(engine, distance),
             "User": {"UserId": user.user_id, "UserStatus": user.user_status}} for user, distance in hits]


def _max_users(max_users) -> int:
    return check_count(max_users, "MaxUsers", DEFAULT_MAX_USERS, 500)


def search_users(engine: FaceEngine, store: FaceStore, collection_id: str, user_id: str | None = None,
                 face_id: str | None = None, user_match_threshold=DEFAULT_SEARCH_THRESHOLD,
                 max_users: int | None = None) -> dict[str, Any]:
    """SearchUsers by one of: an indexed FaceId, or a UserId (all its faces; the user itself excluded)."""
    collection_for(engine, store, collection_id)
    if (user_id is None) == (face_id is None):
        raise InvalidParameterException("SearchUsers needs exactly one of UserId and FaceId")
    max_distance = threshold_to_distance(engine, user_match_threshold, "UserMatchThreshold")
    limit = _max_users(max_users)
    response: dict[str, Any] = {"FaceModelVersion": engine.model_version}
    if face_id is not None:
        found = store.get_faces(collection_id, [face_id])
        if not found:
            raise ResourceNotFoundException(f"Face {face_id} is not in collection {collection_id}")
        hits = store.search_users(collection_id, found[0].vector, limit, max_distance=max_distance)
        response["SearchedFace"] = {"FaceId": face_id}
    else:
        store.get_user(collection_id, user_id)
        faces, _ = store.list_faces(collection_id, user_id=user_id)
        if not faces:
            raise InvalidParameterException(f"User {user_id} has no faces to search with")
        vectors = np.stack([f.vector for f in faces])
        hits = store.search_users(collection_id, vectors, limit, max_distance=max_distance,
                                  exclude_user_ids=[user_id])
        response["SearchedUser"] = {"UserId": user_id}
    response["UserMatches"] = _user_matches(engine, hits)
    return response


def search_users_by_image(engine: FaceEngine, store: FaceStore, collection_id: str, image,
                          user_match_threshold=DEFAULT_SEARCH_THRESHOLD, max_users: int | None = None,
                          quality_filter: str | None = None) -> dict[str, Any]:
    """SearchUsersByImage: the largest face of the image against the collection's users."""
    collection_for(engine, store, collection_id)
    max_distance = threshold_to_distance(engine, user_match_threshold, "UserMatchThreshold")
    limit = _max_users(max_users)
    loaded = load_image(image)
    face, detail, others = largest_searchable_face(engine, loaded, quality_filter)
    vector = engine.embed(loaded, [face])[0]
    hits = store.search_users(collection_id, np.asarray(vector), limit, max_distance=max_distance)
    return {"UserMatches": _user_matches(engine, hits), "FaceModelVersion": engine.model_version,
            "SearchedFace": {"FaceDetail": detail}, "UnsearchedFaces": others}
