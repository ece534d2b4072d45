"""DetectFaces and CompareFaces as plain functions over a FaceEngine.

Inputs and outputs use Rekognition's names and shapes (FaceDetails, BoundingBox
as ratios of the image, Similarity 0-100...), so the HTTP layer only has to
move them on and off the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload

from faceaudit.engine.base import DetectedFace, FaceAttributes, FaceEngine
from faceaudit.engine.geometry import estimate_pose, estimate_quality
from faceaudit.errors import InvalidParameterException
from faceaudit.images import LoadedImage, load_image
from faceaudit.runtime import default_scoring
from faceaudit.scoring import Scoring

MAX_FACES = 100  # Rekognition returns at most the 100 largest faces.

# Attributes the default models can produce. Everything else Rekognition
# offers (Emotions, Smile, Eyeglasses, Beard, ...) is accepted and left out of
# the response, because no model here can estimate it.
SUPPORTED_ATTRIBUTES = {"DEFAULT", "ALL", "AGE_RANGE", "GENDER"}
KNOWN_ATTRIBUTES = SUPPORTED_ATTRIBUTES | {
    "BEARD", "EMOTIONS", "EYE_DIRECTION", "EYEGLASSES", "EYES_OPEN", "MOUTH_OPEN",
    "MUSTACHE", "FACE_OCCLUDED", "SMILE", "SUNGLASSES",
}


def _round(value: float) -> float:
    return round(float(value), 6)


def bounding_box(face: DetectedFace, image: LoadedImage) -> dict[str, float]:
    """Rekognition's BoundingBox: ratios of the image size (may pass the edges, as Rekognition's do)."""
    return {
        "Width": _round(face.width / image.width),
        "Height": _round(face.height / image.height),
        "Left": _round(face.left / image.width),
        "Top": _round(face.top / image.height),
    }


def _landmarks(face: DetectedFace, image: LoadedImage) -> list[dict[str, Any]]:
    return [{"Type": name, "X": _round(x / image.width), "Y": _round(y / image.height)}
            for name, (x, y) in face.landmarks.items()]


def compared_face(face: DetectedFace, image: LoadedImage) -> dict[str, Any]:
    """Rekognition's ComparedFace: box, confidence, landmarks, pose, quality."""
    return {
        "BoundingBox": bounding_box(face, image),
        "Confidence": _round(face.confidence * 100.0),
        "Landmarks": _landmarks(face, image),
        "Pose": estimate_pose(face, image.width, image.height),
        "Quality": estimate_quality(image.pixels, face),
    }


def wanted_attributes(attributes: Iterable[str] | None) -> set[str]:
    wanted = set(attributes or ["DEFAULT"])
    unknown = wanted - KNOWN_ATTRIBUTES
    if unknown:
        raise InvalidParameterException(
            f"Unknown value(s) in Attributes: {sorted(unknown)}; valid values are {sorted(KNOWN_ATTRIBUTES)}")
    if "ALL" in wanted:
        return {"AGE_RANGE", "GENDER"}
    return wanted & {"AGE_RANGE", "GENDER"}


def face_detail(face: DetectedFace, image: LoadedImage, attributes: FaceAttributes | None,
                wanted: set[str]) -> dict[str, Any]:
    """Rekognition's FaceDetail for one face, with the requested attributes."""
    detail = compared_face(face, image)
    if attributes is not None and "AGE_RANGE" in wanted:
        detail["AgeRange"] = {"Low": attributes.age_low, "High": attributes.age_high}
    if attributes is not None and "GENDER" in wanted:
        detail["Gender"] = {"Value": attributes.gender,
                            "Confidence": _round(attributes.gender_confidence)}
    return detail


def detect_faces(engine: FaceEngine, image, attributes: Iterable[str] | None = None) -> dict[str, Any]:
    """DetectFaces: up to 100 largest faces with box, landmarks, pose, quality and,
    when asked (``ALL``, ``AGE_RANGE``, ``GENDER``), age range and gender."""
    wanted = wanted_attributes(attributes)
    loaded = load_image(image)
    faces = engine.detect(loaded, max_faces=MAX_FACES)
    analyzed = engine.analyze(loaded, faces) if wanted and faces else [None] * len(faces)
    return {"FaceDetails": [face_detail(face, loaded, attrs, wanted)
                            for face, attrs in zip(faces, analyzed)]}


def scoring_for(engine: FaceEngine, scoring: Scoring | None) -> Scoring:
    """``scoring`` if given, else the engine's default one (with the environment's normalization)."""
    return default_scoring(engine) if scoring is None else scoring


@overload
def check_count(value: object, name: str, default: int, maximum: int | None = None) -> int: ...
@overload
def check_count(value: object, name: str, default: None, maximum: int | None = None) -> int | None: ...
def check_count(value: object, name: str, default: int | None, maximum: int | None = None) -> int | None:
    """A whole-number limit such as MaxFaces: ``default`` when absent, else 1..``maximum``."""
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, int) or value < 1
            or (maximum is not None and value > maximum)):
        bound = "a positive integer" if maximum is None else f"between 1 and {maximum}"
        raise InvalidParameterException(f"{name} must be {bound}, got {value!r}")
    return value


def check_threshold(value, name: str = "SimilarityThreshold") -> float:
    """A 0-100 similarity threshold as a float, or InvalidParameterException naming the parameter."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterException(f"{name} must be a number, got {value!r}") from None
    if not 0.0 <= number <= 100.0:
        raise InvalidParameterException(f"{name} must be between 0 and 100, got {value}")
    return number


def compare_faces(engine: FaceEngine, source, target, similarity_threshold: float = 80.0,
                  scoring: Scoring | None = None) -> dict[str, Any]:
    """CompareFaces: the largest face of ``source`` against every face of ``target``.

    Faces at or above ``similarity_threshold`` are FaceMatches (most similar
    first), the rest UnmatchedFaces. A source without a face is an
    InvalidParameterException, as in Rekognition; a target without one gives
    empty lists.
    """
    threshold = check_threshold(similarity_threshold)
    source_image, target_image = load_image(source), load_image(target)
    source_faces = engine.detect(source_image, max_faces=1)
    if not source_faces:
        raise InvalidParameterException("No face was detected in the source image")
    target_faces = engine.detect(target_image, max_faces=MAX_FACES)
    source_face = source_faces[0]
    response: dict[str, Any] = {
        "SourceImageFace": {"BoundingBox": bounding_box(source_face, source_image),
                            "Confidence": _round(source_face.confidence * 100.0)},
        "FaceMatches": [],
        "UnmatchedFaces": [],
    }
    if not target_faces:
        return response
    source_vector = engine.embed(source_image, [source_face])
    target_vectors = engine.embed(target_image, target_faces)
    similarities = scoring_for(engine, scoring).similarities(source_vector, target_vectors)[0]
    order = sorted(range(len(target_faces)), key=lambda i: -similarities[i])
    for i in order:
        face = compared_face(target_faces[i], target_image)
        if similarities[i] >= threshold:
            response["FaceMatches"].append({"Similarity": _round(similarities[i]), "Face": face})
        else:
            response["UnmatchedFaces"].append(face)
    return response
