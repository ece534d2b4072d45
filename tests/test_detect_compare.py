"""DetectFaces and CompareFaces on public-domain and synthetic images (no faces-dev needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from faceaudit.engine import LANDMARK_NAMES
from faceaudit.errors import InvalidImageFormatException, InvalidParameterException
from faceaudit.rekognition import compare_faces, detect_faces
from support.images import encode


@pytest.fixture(scope="module")
def astronaut_faces(engine, astronaut_jpeg):
    return detect_faces(engine, astronaut_jpeg, ["ALL"])["FaceDetails"]


def test_detect_finds_the_one_face_with_rekognition_shape(astronaut_faces):
    assert len(astronaut_faces) == 1
    face = astronaut_faces[0]
    box = face["BoundingBox"]
    # The face sits in the upper middle of the 512 x 512 portrait (about x 180-270, y 60-175).
    assert 0.3 < box["Left"] < 0.4 and 0.08 < box["Top"] < 0.16
    assert 0.15 < box["Width"] < 0.22 and 0.18 < box["Height"] < 0.26
    assert face["Confidence"] > 90  # the detector's own score: MTCNN (dlib engine) 99.99, YuNet (sface) 93.1
    assert [lm["Type"] for lm in face["Landmarks"]] == list(LANDMARK_NAMES)
    points = {lm["Type"]: (lm["X"], lm["Y"]) for lm in face["Landmarks"]}
    for x, y in points.values():  # every landmark inside the face box
        assert box["Left"] < x < box["Left"] + box["Width"] and box["Top"] < y < box["Top"] + box["Height"]
    assert points["eyeLeft"][0] < points["eyeRight"][0]  # "left" = the picture's left
    assert points["mouthLeft"][0] < points["mouthRight"][0]
    assert points["eyeLeft"][1] < points["nose"][1] < points["mouthLeft"][1]
    assert set(face["Pose"]) == {"Roll", "Yaw", "Pitch"}
    assert 0 <= face["Quality"]["Brightness"] <= 100 and 0 <= face["Quality"]["Sharpness"] <= 100
    # She was about 36 when photographed and is a woman.
    assert face["Gender"]["Value"] == "Female" and 50 <= face["Gender"]["Confidence"] <= 100
    # AgeRange is a calibrated ~90% interval (docs/engine.md), no longer the network's
    # zero-to-few-year central 68%: it holds her age, and is neither a point nor the whole of life.
    low, high = face["AgeRange"]["Low"], face["AgeRange"]["High"]
    assert low <= 36 <= high
    assert 10 <= high - low <= 40 and low >= 15 and high <= 60
    # Attributes no model here can produce are absent, never invented.
    for absent in ("Emotions", "Smile", "Eyeglasses", "Sunglasses", "Beard", "Mustache", "EyesOpen",
                   "MouthOpen", "FaceOccluded", "EyeDirection"):
        assert absent not in face


def test_default_attributes_leave_out_age_and_gender(engine, astronaut_jpeg):
    face = detect_faces(engine, astronaut_jpeg)["FaceDetails"][0]
    assert "AgeRange" not in face and "Gender" not in face
    only_gender = detect_faces(engine, astronaut_jpeg, ["GENDER"])["FaceDetails"][0]
    assert "Gender" in only_gender and "AgeRange" not in only_gender
    unsupported = detect_faces(engine, astronaut_jpeg, ["EMOTIONS", "SMILE"])["FaceDetails"][0]
    assert "Emotions" not in unsupported and "Smile" not in unsupported


def test_unknown_attribute_is_invalid_parameter(engine, astronaut_jpeg):
    with pytest.raises(InvalidParameterException) as caught:
        detect_faces(engine, astronaut_jpeg, ["HAIRCUT"])
    assert caught.value.code == "InvalidParameterException"


@pytest.mark.models
@pytest.mark.parametrize("engine_name", [
    "dlib",
    # A known limitation, kept visible: YuNet's landmarks (OpenCV's own FaceDetectorYN gives the same
    # points) barely follow an in-plane rotation, so Roll moves ~1.3 degrees for a 15-degree turn
    # (docs/engines.md, "Known limitations"). strict: the day it passes, this mark must go.
    pytest.param("sface", marks=pytest.mark.xfail(strict=True, reason="YuNet landmarks under-report roll")),
])
def test_pose_follows_the_picture(engine_name, astronaut_rgb):
    from faceaudit.runtime import default_engine
    engine = default_engine(engine_name)

    def pose(pixels):
        return detect_faces(engine, encode(pixels, "PNG"))["FaceDetails"][0]["Pose"]

    upright = pose(astronaut_rgb)
    assert abs(upright["Yaw"]) < 10 and abs(upright["Pitch"]) < 20  # a frontal portrait
    mirrored = pose(np.ascontiguousarray(astronaut_rgb[:, ::-1]))
    assert mirrored["Roll"] == pytest.approx(-upright["Roll"], abs=2)
    assert abs(mirrored["Yaw"]) < 10
    # Turning the picture 15 degrees clockwise lowers the picture's right eye: Roll +15.
    rotated = np.asarray(Image.fromarray(astronaut_rgb).rotate(-15, resample=Image.BICUBIC))
    assert pose(rotated)["Roll"] - upright["Roll"] == pytest.approx(15, abs=3)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, 0, 0), (-30, 0, 0), (0, 20, 0),
                                            (0, -20, 0), (20, -10, 10), (-40, 15, -25)])
def test_pose_recovers_the_angles_of_a_generic_face(yaw, pitch, roll):
    """Landmarks of the generic face turned by known angles give those angles back."""
    from faceaudit.engine import DetectedFace
    from faceaudit.engine import geometry as g
    model = {  # x right, y up, z towards the camera; nose tip at the origin
        "eyeLeft": (-g.EYE_HALF_WIDTH, g.EYE_HEIGHT, -g.EYE_DEPTH),
        "eyeRight": (g.EYE_HALF_WIDTH, g.EYE_HEIGHT, -g.EYE_DEPTH),
        "nose": (0.0, 0.0, 0.0),
        "mouthLeft": (-25.0, -g.MOUTH_DROP, -g.MOUTH_DEPTH),
        "mouthRight": (25.0, -g.MOUTH_DROP, -g.MOUTH_DEPTH),
    }
    a, p, r = np.radians([yaw, pitch, roll])
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    # Positive pitch raises the chin: the face's top goes away from the camera.
    tip = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    landmarks = {}
    for name, point in model.items():
        x, y, _ = turn @ tip @ np.array(point)
        # Orthographic projection to pixels (y down), then roll within the picture.
        u, v = x, -y
        landmarks[name] = (300 + u * np.cos(r) - v * np.sin(r), 300 + u * np.sin(r) + v * np.cos(r))
    face = DetectedFace(left=200, top=200, right=400, bottom=400, confidence=1.0, landmarks=landmarks)
    estimated = g.estimate_pose(face, 600, 600)
    assert estimated["Roll"] == pytest.approx(roll, abs=3)
    assert estimated["Yaw"] == pytest.approx(yaw, abs=4)
    assert estimated["Pitch"] == pytest.approx(pitch, abs=4)


def test_blur_lowers_sharpness(engine, astronaut_rgb):
    from PIL import ImageFilter
    blurred = np.asarray(Image.fromarray(astronaut_rgb).filter(ImageFilter.GaussianBlur(4)))
    sharp = detect_faces(engine, encode(astronaut_rgb, "PNG"))["FaceDetails"][0]["Quality"]["Sharpness"]
    soft = detect_faces(engine, encode(blurred, "PNG"))["FaceDetails"][0]["Quality"]["Sharpness"]
    assert soft < sharp / 2


def test_no_face_gives_empty_details(engine):
    sky = np.full((200, 300, 3), (90, 140, 220), dtype=np.uint8)
    assert detect_faces(engine, encode(sky, "PNG")) == {"FaceDetails": []}


def test_at_most_100_faces_largest_first(engine, astronaut_rgb):
    face = astronaut_rgb[40:200, 160:290]  # one face with some margin, 160 x 130
    tiles = [np.asarray(Image.fromarray(face).resize((65, 80))) for _ in range(121)]
    rows = [np.concatenate(tiles[r * 11:(r + 1) * 11], axis=1) for r in range(11)]
    grid = np.concatenate(rows, axis=0)
    # One larger copy so "largest first" has something to put first.
    canvas = np.zeros((grid.shape[0] + 200, grid.shape[1], 3), dtype=np.uint8)
    canvas[:grid.shape[0]] = grid
    canvas[grid.shape[0]:, :163] = np.asarray(Image.fromarray(face).resize((163, 200)))
    details = detect_faces(engine, encode(canvas, "PNG"))["FaceDetails"]
    assert len(details) == 100
    areas = [d["BoundingBox"]["Width"] * d["BoundingBox"]["Height"] for d in details]
    assert all(a >= b - 1e-6 for a, b in itertools.pairwise(areas))  # ratios are rounded to 6 places
    assert details[0]["BoundingBox"]["Top"] > grid.shape[0] / canvas.shape[0] - 0.02


def test_compare_same_photo_matches_and_reports_shape(engine, astronaut_jpeg, astronaut_rgb):
    mirrored = encode(np.ascontiguousarray(astronaut_rgb[:, ::-1]), "PNG")
    response = compare_faces(engine, astronaut_jpeg, mirrored)
    assert set(response) == {"SourceImageFace", "FaceMatches", "UnmatchedFaces"}
    assert set(response["SourceImageFace"]) == {"BoundingBox", "Confidence"}
    assert len(response["FaceMatches"]) == 1 and response["UnmatchedFaces"] == []
    match = response["FaceMatches"][0]
    assert match["Similarity"] >= 95
    assert set(match["Face"]) == {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"}


def test_compare_threshold_splits_matches_from_unmatched(engine, astronaut_jpeg, astronaut_rgb):
    mirrored = encode(np.ascontiguousarray(astronaut_rgb[:, ::-1]), "PNG")
    similarity = compare_faces(engine, astronaut_jpeg, mirrored)["FaceMatches"][0]["Similarity"]
    strict = compare_faces(engine, astronaut_jpeg, mirrored, similarity_threshold=min(100, similarity + 0.01))
    if similarity < 100:
        assert strict["FaceMatches"] == [] and len(strict["UnmatchedFaces"]) == 1
    assert compare_faces(engine, astronaut_jpeg, astronaut_jpeg, 100)["FaceMatches"][0]["Similarity"] == 100


@pytest.mark.parametrize("threshold", [-1, 100.5, "high", None])
def test_compare_threshold_out_of_range(engine, astronaut_jpeg, threshold):
    with pytest.raises(InvalidParameterException):
        compare_faces(engine, astronaut_jpeg, astronaut_jpeg, threshold)


def test_compare_without_source_face_is_invalid_parameter(engine, astronaut_jpeg):
    sky = encode(np.full((200, 200, 3), 128, dtype=np.uint8), "PNG")
    with pytest.raises(InvalidParameterException):
        compare_faces(engine, sky, astronaut_jpeg)
    empty_target = compare_faces(engine, astronaut_jpeg, sky)
    assert empty_target["FaceMatches"] == [] and empty_target["UnmatchedFaces"] == []


def test_operations_report_bad_images_by_rekognition_name(engine, astronaut_jpeg):
    with pytest.raises(InvalidImageFormatException):
        detect_faces(engine, b"not an image at all")
    with pytest.raises(InvalidImageFormatException):
        compare_faces(engine, astronaut_jpeg, astronaut_jpeg[: len(astronaut_jpeg) // 2])
