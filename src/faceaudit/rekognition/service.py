"""The Rekognition operations behind one call: ``service.call("IndexFaces", request) -> response``.

Requests and responses are Python dicts in Rekognition's shapes, with blobs as
bytes and timestamps as datetimes, exactly as boto3 users write and read them.
The HTTP layer (faceaudit.server) only decodes the wire format into such a dict
and encodes the response back; what each operation means lives in faces.py,
collections.py and users.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faceaudit.engine.base import FaceEngine
from faceaudit.errors import InvalidParameterException
from faceaudit.images import image_bytes_from_request
from faceaudit.rekognition import collections, faces, users
from faceaudit.runtime import default_scoring
from faceaudit.scoring import Scoring
from faceaudit.settings import Settings
from faceaudit.storage import FaceStore


class RekognitionService:
    def __init__(self, engine: FaceEngine, store: FaceStore | None = None, *, bucket_dir: str | None = None,
                 scoring: Scoring | None = None, settings: Settings | None = None):
        """``scoring``: how faces are compared in every operation; default the engine's own
        scale with the score normalization ``settings`` name (default: the environment's)."""
        self.engine = engine
        self.store = store
        self.bucket_dir = bucket_dir
        self._scoring = scoring
        self._settings = settings
        e = engine
        # Each entry turns a request dict into a call of a plain function.
        stateless: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "DetectFaces": lambda r: faces.detect_faces(e, self.image(r), r.get("Attributes")),
            "CompareFaces": lambda r: faces.compare_faces(
                e, self.image(r, "SourceImage"), self.image(r, "TargetImage"),
                r.get("SimilarityThreshold", 80.0), self.scoring),
        }
        stored: dict[str, Callable[[FaceStore, dict[str, Any]], dict[str, Any]]] = {
            "CreateCollection": lambda s, r: collections.create_collection(e, s, self.arg(r, "CollectionId")),
            "ListCollections": lambda s, r: collections.list_collections(
                s, r.get("NextToken"), r.get("MaxResults")),
            "DescribeCollection": lambda s, r: collections.describe_collection(s, self.arg(r, "CollectionId")),
            "DeleteCollection": lambda s, r: collections.delete_collection(s, self.arg(r, "CollectionId")),
            "IndexFaces": lambda s, r: collections.index_faces(
                e, s, self.arg(r, "CollectionId"), self.image(r), r.get("ExternalImageId"),
                r.get("DetectionAttributes"), r.get("MaxFaces"), r.get("QualityFilter")),
            "ListFaces": lambda s, r: collections.list_faces(
                e, s, self.arg(r, "CollectionId"), r.get("NextToken"), r.get("MaxResults"),
                r.get("UserId"), r.get("FaceIds")),
            "DeleteFaces": lambda s, r: collections.delete_faces(
                s, self.arg(r, "CollectionId"), self.arg(r, "FaceIds")),
            "SearchFaces": lambda s, r: collections.search_faces(
                e, s, self.arg(r, "CollectionId"), self.arg(r, "FaceId"), r.get("MaxFaces"),
                r.get("FaceMatchThreshold", collections.DEFAULT_MATCH_THRESHOLD), self.scoring),
            "SearchFacesByImage": lambda s, r: collections.search_faces_by_image(
                e, s, self.arg(r, "CollectionId"), self.image(r), r.get("MaxFaces"),
                r.get("FaceMatchThreshold", collections.DEFAULT_MATCH_THRESHOLD), r.get("QualityFilter"), self.scoring),
            "CreateUser": lambda s, r: users.create_user(s, self.arg(r, "CollectionId"), self.arg(r, "UserId")),
            "DeleteUser": lambda s, r: users.delete_user(s, self.arg(r, "CollectionId"), self.arg(r, "UserId")),
            "ListUsers": lambda s, r: users.list_users(
                s, self.arg(r, "CollectionId"), r.get("MaxResults"), r.get("NextToken")),
            "AssociateFaces": lambda s, r: users.associate_faces(
                e, s, self.arg(r, "CollectionId"), self.arg(r, "UserId"), self.arg(r, "FaceIds"),
                r.get("UserMatchThreshold", users.DEFAULT_ASSOCIATE_THRESHOLD), self.scoring),
            "DisassociateFaces": lambda s, r: users.disassociate_faces(
                e, s, self.arg(r, "CollectionId"), self.arg(r, "UserId"), self.arg(r, "FaceIds")),
            "SearchUsers": lambda s, r: users.search_users(
                e, s, self.arg(r, "CollectionId"), r.get("UserId"), r.get("FaceId"),
                r.get("UserMatchThreshold", users.DEFAULT_SEARCH_THRESHOLD), r.get("MaxUsers"), self.scoring),
            "SearchUsersByImage": lambda s, r: users.search_users_by_image(
                e, s, self.arg(r, "CollectionId"), self.image(r),
                r.get("UserMatchThreshold", users.DEFAULT_SEARCH_THRESHOLD), r.get("MaxUsers"),
                r.get("QualityFilter"), self.scoring),
        }
        self._operations = dict(stateless)
        for name, handler in stored.items():
            self._operations[name] = self._with_store(handler)

    def _with_store(self, handler: Callable[[FaceStore, dict[str, Any]], dict[str, Any]]
                    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda request: handler(self._store(), request)

    @property
    def scoring(self) -> Scoring:
        # Made on first use: a service that only detects faces needs no similarity scale.
        if self._scoring is None:
            self._scoring = default_scoring(self.engine, self._settings)
        return self._scoring

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._operations)

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run one operation; raises a RekognitionError subclass on bad input."""
        handler = self._operations.get(operation)
        if handler is None:
            raise InvalidParameterException(f"Operation {operation} is not supported by faceaudit")
        return handler(request)

    def _store(self) -> FaceStore:
        if self.store is None:
            raise InvalidParameterException("This faceaudit service was started without storage")
        return self.store

    @staticmethod
    def arg(request: dict[str, Any], key: str):
        if request.get(key) is None:
            raise InvalidParameterException(f"Missing required parameter {key}")
        return request[key]

    def image(self, request: dict[str, Any], key: str = "Image") -> bytes:
        return image_bytes_from_request(self.arg(request, key), bucket_dir=self.bucket_dir)
