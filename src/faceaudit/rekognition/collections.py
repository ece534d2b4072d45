"""Collections, IndexFaces, ListFaces, DeleteFaces and face search, over an engine and a store.

Plain functions in Rekognition's request/response vocabulary. The store keeps
vectors and metadata, never images. Thresholds (0-100 similarity) become
embedding distances, and distances similarities, through one faceaudit.scoring.Scoring
(the engine's calibrated scale plus any score normalization).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from faceaudit.engine.base import DetectedFace, FaceEngine
from faceaudit.errors import InvalidParameterException, ResourceNotFoundException
from faceaudit.images import LoadedImage, load_image
from faceaudit.rekognition import quality
from faceaudit.rekognition.faces import (
    MAX_FACES,
    bounding_box,
    check_count,
    check_threshold,
    face_detail,
    scoring_for,
    wanted_attributes,
)
from faceaudit.scoring import Scoring
from faceaudit.settings import DEFAULT_ENGINE
from faceaudit.storage import Collection, FaceStore, StoredFace

DEFAULT_MATCH_THRESHOLD = 80.0
DEFAULT_SEARCH_MAX_FACES = 100  # Rekognition documents no default; 100 is faceaudit's


def threshold_to_distance(scoring: Scoring, threshold, name: str = "FaceMatchThreshold") -> float | None:
    """The largest distance (in ``scoring``'s terms) that still reaches ``threshold``; None means any."""
    return scoring.max_distance(check_threshold(threshold, name))


def similarity(scoring: Scoring, distance: float) -> float:
    """A response's Similarity (or Confidence) for a distance."""
    return round(scoring.similarity(distance), 6)


def face_record(face: StoredFace) -> dict[str, Any]:
    """Rekognition's Face shape."""
    record = {"FaceId": face.face_id, "BoundingBox": face.bounding_box, "ImageId": face.image_id,
              "Confidence": face.confidence, "IndexFacesModelVersion": face.index_faces_model_version}
    if face.external_image_id is not None:
        record["ExternalImageId"] = face.external_image_id
    if face.user_id is not None:
        record["UserId"] = face.user_id
    return record


def collection_for(engine: FaceEngine, store: FaceStore, collection_id: str) -> Collection:
    """The collection, checked to hold vectors this engine can compare with."""
    collection = store.describe_collection(collection_id)
    if collection.face_model_version != engine.model_version:
        raise InvalidParameterException(model_mismatch_message(collection, engine))
    return collection


def model_mismatch_message(collection: Collection, engine: FaceEngine) -> str:
    """Which model the collection was created with, which one runs here, and how to serve it."""
    from faceaudit.runtime import engine_for_model_version
    wanted, running = engine_for_model_version(collection.face_model_version), \
        engine_for_model_version(engine.model_version)

    def named(version: str, spec) -> str:
        if spec is None:
            return f"model version {version}"
        default = ", faceaudit's default" if spec.name == DEFAULT_ENGINE else ""
        return f"model version {version} (engine {spec.name}{default})"

    how = (f"serve it with `faceaudit serve --engine {wanted.name}` (FACEAUDIT_ENGINE={wanted.name})"
           if wanted is not None else "no engine of this faceaudit has that model version")
    # Vectors of two models live in different spaces: comparing them would give meaningless scores,
    # and faceaudit keeps no images to embed again, so only the user's own photos can move a collection.
    return (f"Collection {collection.collection_id} was created with {named(collection.face_model_version, wanted)}; "
            f"this server runs {named(engine.model_version, running)}, whose faces cannot be compared with "
            f"it: {how}, or create a new collection under this engine and index the original photos into it "
            "again (faceaudit keeps no images, so it cannot convert stored faces; docs/engines.md)")


# -- collections ---------------------------------------------------------------------
def create_collection(engine: FaceEngine, store: FaceStore, collection_id: str) -> dict[str, Any]:
    collection = store.create_collection(collection_id, engine.model_version)
    return {"StatusCode": 200, "CollectionArn": collection.arn,
            "FaceModelVersion": collection.face_model_version}


def list_collections(store: FaceStore, next_token: str | None = None, max_results: int | None = None
                     ) -> dict[str, Any]:
    collections, token = store.list_collections_detailed(next_token, max_results or None)
    response: dict[str, Any] = {"CollectionIds": [c.collection_id for c in collections],
                                "FaceModelVersions": [c.face_model_version for c in collections]}
    if token:
        response["NextToken"] = token
    return response


def describe_collection(store: FaceStore, collection_id: str) -> dict[str, Any]:
    c = store.describe_collection(collection_id)
    return {"FaceCount": c.face_count, "UserCount": c.user_count, "FaceModelVersion": c.face_model_version,
            "CollectionARN": c.arn, "CreationTimestamp": c.created}


def delete_collection(store: FaceStore, collection_id: str) -> dict[str, Any]:
    store.delete_collection(collection_id)
    return {"StatusCode": 200}


# -- faces ---------------------------------------------------------------------------
def _details(engine: FaceEngine, image: LoadedImage, faces: list[DetectedFace], attributes) -> list[dict]:
    wanted = wanted_attributes(attributes)
    analyzed = engine.analyze(image, faces) if wanted and faces else [None] * len(faces)
    return [face_detail(face, image, attrs, wanted) for face, attrs in zip(faces, analyzed)]


def index_faces(engine: FaceEngine, store: FaceStore, collection_id: str, image,
                external_image_id: str | None = None, detection_attributes=None,
                max_faces: int | None = None, quality_filter: str | None = None) -> dict[str, Any]:
    """IndexFaces: detect, filter by quality, keep the largest ``max_faces``, store their vectors.

    All faces of one call are stored in one transaction: after a crash either
    all of them are in the collection or none is.
    """
    collection_for(engine, store, collection_id)
    level = quality.check_level(quality_filter, "AUTO")
    max_faces = check_count(max_faces, "MaxFaces", None)
    loaded = load_image(image)
    faces = engine.detect(loaded, max_faces=MAX_FACES)
    details = _details(engine, loaded, faces, detection_attributes)
    kept: list[tuple[DetectedFace, dict[str, Any]]] = []
    unindexed: list[dict[str, Any]] = []
    for face, detail in zip(faces, details):  # largest first
        reasons = quality.reasons_to_filter(detail, min(face.width, face.height), level)
        if not reasons and max_faces is not None and len(kept) >= max_faces:
            reasons = ["EXCEEDS_MAX_FACES"]
        if reasons:
            unindexed.append({"Reasons": reasons, "FaceDetail": detail})
        else:
            kept.append((face, detail))
    vectors = engine.embed(loaded, [face for face, _ in kept])
    image_id = str(uuid.uuid4())
    stored = [StoredFace(face_id=str(uuid.uuid4()), image_id=image_id, external_image_id=external_image_id,
                         bounding_box=detail["BoundingBox"], confidence=detail["Confidence"],
                         index_faces_model_version=engine.model_version, user_id=None, vector=vector)
              for (face, detail), vector in zip(kept, vectors)]
    if stored:
        store.add_faces(collection_id, stored)
    return {"FaceRecords": [{"Face": face_record(s), "FaceDetail": detail} for s, (_, detail) in zip(stored, kept)],
            "FaceModelVersion": engine.model_version, "UnindexedFaces": unindexed}


def list_faces(engine: FaceEngine, store: FaceStore, collection_id: str, next_token: str | None = None,
               max_results: int | None = None, user_id: str | None = None, face_ids=None) -> dict[str, Any]:
    collection = store.describe_collection(collection_id)
    faces, token = store.list_faces(collection_id, next_token, max_results or None,
                                    user_id=user_id, face_ids=face_ids)
    response: dict[str, Any] = {"Faces": [face_record(f) for f in faces],
                                "FaceModelVersion": collection.face_model_version}
    if token:
        response["NextToken"] = token
    return response


def delete_faces(store: FaceStore, collection_id: str, face_ids) -> dict[str, Any]:
    deleted, unsuccessful = store.delete_faces(collection_id, face_ids)
    failures = []
    for failure in unsuccessful:
        entry: dict[str, Any] = {"FaceId": failure.face_id, "Reasons": list(failure.reasons)}
        if failure.user_id is not None:
            entry["UserId"] = failure.user_id
        failures.append(entry)
    return {"DeletedFaces": deleted, "UnsuccessfulFaceDeletions": failures}


# -- search --------------------------------------------------------------------------
def nearest_faces(scoring: Scoring, store: FaceStore, collection: Collection, vector, limit: int,
                  max_distance: float | None, exclude_face_ids=()) -> list[tuple[StoredFace, float]]:
    """The ``limit`` nearest faces within ``max_distance``, exact, in ``scoring``'s distance.

    With score normalization a face's distance can shrink (Scoring.search_radius
    bounds by how much), so the store is asked for every face within that wider
    raw radius, and the normalized distances decide the order and the cut.
    """
    if not scoring.normalized:
        return store.search(collection.collection_id, vector, limit, max_distance=max_distance,
                            exclude_face_ids=exclude_face_ids)
    query = np.atleast_2d(np.asarray(vector, dtype=np.float64))
    hits = store.search(collection.collection_id, vector, max(1, collection.face_count),
                        max_distance=scoring.search_radius(query, max_distance), exclude_face_ids=exclude_face_ids)
    if not hits:
        return []
    rescored = scoring.distances(query, np.stack([face.vector for face, _ in hits]))[0]
    order = sorted(range(len(hits)), key=lambda i: (rescored[i], hits[i][0].face_id))
    kept = [(hits[i][0], float(rescored[i])) for i in order if max_distance is None or rescored[i] <= max_distance]
    return kept[:limit]


def _matches(scoring: Scoring, hits) -> list[dict[str, Any]]:
    return [{"Similarity": similarity(scoring, distance), "Face": face_record(face)} for face, distance in hits]


def _search_limit(max_faces) -> int:
    return check_count(max_faces, "MaxFaces", DEFAULT_SEARCH_MAX_FACES, 4096)


def search_faces(engine: FaceEngine, store: FaceStore, collection_id: str, face_id: str,
                 max_faces: int | None = None, face_match_threshold=DEFAULT_MATCH_THRESHOLD,
                 scoring: Scoring | None = None) -> dict[str, Any]:
    """SearchFaces: faces of the collection like an already indexed face (itself excluded)."""
    collection = collection_for(engine, store, collection_id)
    scoring = scoring_for(engine, scoring)
    limit = _search_limit(max_faces)
    max_distance = threshold_to_distance(scoring, face_match_threshold)
    found = store.get_faces(collection_id, [face_id])
    if not found:
        raise ResourceNotFoundException(f"Face {face_id} is not in collection {collection_id}")
    hits = nearest_faces(scoring, store, collection, found[0].vector, limit, max_distance,
                         exclude_face_ids=[face_id])
    return {"SearchedFaceId": face_id, "FaceMatches": _matches(scoring, hits),
            "FaceModelVersion": engine.model_version}


def largest_searchable_face(engine: FaceEngine, image: LoadedImage, quality_filter: str | None):
    """The largest face and its FaceDetail, the other faces' details with reasons, for *ByImage searches."""
    level = quality.check_level(quality_filter, "NONE")
    faces = engine.detect(image, max_faces=MAX_FACES)
    if not faces:
        raise InvalidParameterException("No face was detected in the image")
    details = _details(engine, image, faces, ["DEFAULT"])
    reasons = quality.reasons_to_filter(details[0], min(faces[0].width, faces[0].height), level)
    if reasons:
        raise InvalidParameterException(
            f"The largest face in the image did not pass QualityFilter {level}: {', '.join(reasons)}")
    others = [{"FaceDetails": detail, "Reasons": ["FACE_NOT_LARGEST"]} for detail in details[1:]]
    return faces[0], details[0], others


def search_faces_by_image(engine: FaceEngine, store: FaceStore, collection_id: str, image,
                          max_faces: int | None = None, face_match_threshold=DEFAULT_MATCH_THRESHOLD,
                          quality_filter: str | None = None, scoring: Scoring | None = None) -> dict[str, Any]:
    """SearchFacesByImage: the largest face of the image against the collection."""
    collection = collection_for(engine, store, collection_id)
    scoring = scoring_for(engine, scoring)
    limit = _search_limit(max_faces)
    max_distance = threshold_to_distance(scoring, face_match_threshold)
    loaded = load_image(image)
    face, detail, _ = largest_searchable_face(engine, loaded, quality_filter)
    vector = engine.embed(loaded, [face])[0]
    hits = nearest_faces(scoring, store, collection, np.asarray(vector), limit, max_distance)
    return {"SearchedFaceBoundingBox": bounding_box(face, loaded), "SearchedFaceConfidence": detail["Confidence"],
            "FaceMatches": _matches(scoring, hits), "FaceModelVersion": engine.model_version}
