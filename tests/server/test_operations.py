"""Every supported Rekognition operation through an unmodified boto3 client and a real server,
on both storage backends: the embedded store and PostgreSQL (``client`` is parametrized).

Faces come from faces-dev's LFW people (identity-labelled): several photos of a
person are indexed, another photo of that person must find them, a stranger
must not, deleted faces must be gone, and pagination returns everything once.
"""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image, ImageFilter

from faceaudit.datasets import faces_dev
from faceaudit.runtime import engine_spec
from faceaudit.settings import DEFAULT_ENGINE

# the server fixtures are reached through getfixturevalue, which the automatic marking cannot see
pytestmark = pytest.mark.models

PEOPLE = 8  # people indexed, 3 photos each; their 4th photo is the probe


def client_error(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def client(request):
    server = "faceaudit_server" if request.param == "embedded" else "postgres_faceaudit_server"
    return request.getfixturevalue(server).client()


@pytest.fixture(scope="module")
def people(faces_dev_root):
    """{name: [4+ photo bytes]} for the first people with at least four photos, and one stranger."""
    photos = defaultdict(list)
    for label in faces_dev.read_labels(faces_dev_root):
        if label.identity:
            photos[label.identity].append(faces_dev_root / label.path)
    chosen = [name for name in sorted(photos) if len(photos[name]) >= 4][:PEOPLE + 1]
    return {name: [p.read_bytes() for p in sorted(photos[name])] for name in chosen}


@pytest.fixture(scope="module")
def gallery(client, people):
    """A collection holding three photos of each of PEOPLE people: {name: [FaceId, ...]}."""
    client.create_collection(CollectionId="people")
    indexed = {}
    for name in list(people)[:PEOPLE]:
        indexed[name] = []
        for photo in people[name][:3]:
            response = client.index_faces(CollectionId="people", Image={"Bytes": photo},
                                          ExternalImageId=name, MaxFaces=1, QualityFilter="NONE")
            assert len(response["FaceRecords"]) == 1
            indexed[name].append(response["FaceRecords"][0]["Face"]["FaceId"])
    yield indexed
    client.delete_collection(CollectionId="people")


# What a server started without --engine records (Rekognition's FaceModelVersion).
DEFAULT_MODEL_VERSION = engine_spec(DEFAULT_ENGINE).model_version


def test_collection_lifecycle(client):
    created = client.create_collection(CollectionId="lifecycle-1")
    assert created["StatusCode"] == 200 and created["FaceModelVersion"] == DEFAULT_MODEL_VERSION
    assert created["CollectionArn"].endswith(":collection/lifecycle-1")
    with pytest.raises(client.exceptions.ResourceAlreadyExistsException):
        client.create_collection(CollectionId="lifecycle-1")
    described = client.describe_collection(CollectionId="lifecycle-1")
    assert described["FaceCount"] == 0 and described["UserCount"] == 0
    assert described["CollectionARN"] == created["CollectionArn"]
    assert described["CreationTimestamp"].year >= 2024  # boto3 parsed a real timestamp
    listed = client.list_collections()
    assert "lifecycle-1" in listed["CollectionIds"]
    assert len(listed["FaceModelVersions"]) == len(listed["CollectionIds"])
    assert client.delete_collection(CollectionId="lifecycle-1")["StatusCode"] == 200
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_collection(CollectionId="lifecycle-1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_collection(CollectionId="lifecycle-1")


@pytest.mark.parametrize("bad_id", ["has space", "slash/id", "x" * 256])
def test_invalid_collection_id(client, bad_id):
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.create_collection(CollectionId=bad_id)


def test_unknown_collection(client, people):
    photo = next(iter(people.values()))[0]
    for call in (lambda: client.index_faces(CollectionId="nope", Image={"Bytes": photo}),
                 lambda: client.search_faces_by_image(CollectionId="nope", Image={"Bytes": photo}),
                 lambda: client.list_faces(CollectionId="nope"),
                 lambda: client.list_users(CollectionId="nope")):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            call()


def test_indexed_people_are_found_by_another_photo(client, gallery, people):
    assert client.describe_collection(CollectionId="people")["FaceCount"] == 3 * PEOPLE
    for name in gallery:
        response = client.search_faces_by_image(CollectionId="people", Image={"Bytes": people[name][3]})
        assert response["FaceModelVersion"] == DEFAULT_MODEL_VERSION and response["SearchedFaceConfidence"] > 90
        matches = response["FaceMatches"]
        assert matches, f"{name}'s fourth photo found nobody"
        assert matches[0]["Face"]["ExternalImageId"] == name
        assert all(m["Similarity"] >= 80 for m in matches)
        assert [m["Similarity"] for m in matches] == sorted((m["Similarity"] for m in matches), reverse=True)


def test_a_stranger_is_not_found_above_the_threshold(client, gallery, people):
    stranger = list(people)[PEOPLE]
    assert stranger not in gallery
    for photo in people[stranger]:
        for threshold in (80, 95, 99):
            matches = client.search_faces_by_image(CollectionId="people", Image={"Bytes": photo},
                                                   FaceMatchThreshold=threshold)["FaceMatches"]
            assert all(m["Similarity"] >= threshold for m in matches)
        strict = client.search_faces_by_image(CollectionId="people", Image={"Bytes": photo},
                                              FaceMatchThreshold=99)
        assert strict["FaceMatches"] == []


def test_search_faces_by_face_id_excludes_the_face_itself(client, gallery):
    _, (first, *others) = next(iter(gallery.items()))
    response = client.search_faces(CollectionId="people", FaceId=first, MaxFaces=2)
    assert response["SearchedFaceId"] == first
    found = [m["Face"]["FaceId"] for m in response["FaceMatches"]]
    assert first not in found and len(found) <= 2
    assert set(found) <= set(others) and found


def test_search_limits(client, gallery, people):
    photo = next(iter(people.values()))[3]
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.search_faces_by_image(CollectionId="people", Image={"Bytes": photo}, MaxFaces=5000)
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.search_faces_by_image(CollectionId="people", Image={"Bytes": photo}, FaceMatchThreshold=101)
    one = client.search_faces_by_image(CollectionId="people", Image={"Bytes": photo}, MaxFaces=1,
                                       FaceMatchThreshold=0)
    assert len(one["FaceMatches"]) == 1


def test_list_faces_pages_return_every_face_once(client, gallery):
    seen, token = [], None
    while True:
        kwargs = {"NextToken": token} if token else {}
        page = client.list_faces(CollectionId="people", MaxResults=5, **kwargs)
        assert len(page["Faces"]) <= 5
        seen += [face["FaceId"] for face in page["Faces"]]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(f for faces in gallery.values() for f in faces)
    with pytest.raises(client.exceptions.InvalidPaginationTokenException):
        client.list_faces(CollectionId="people", NextToken="not-a-token")


def test_index_faces_options_and_unindexed_reasons(client, astronaut_rgb):
    client.create_collection(CollectionId="options")
    try:
        face = Image.fromarray(astronaut_rgb[40:200, 160:290])
        canvas = Image.new("RGB", (600, 300))
        canvas.paste(face.resize((195, 240)), (10, 10))
        canvas.paste(face.resize((130, 160)), (250, 40))
        canvas.paste(face.resize((98, 120)), (440, 60))
        buffer = io.BytesIO()
        canvas.save(buffer, "PNG")
        response = client.index_faces(CollectionId="options", Image={"Bytes": buffer.getvalue()},
                                      MaxFaces=2, DetectionAttributes=["ALL"], ExternalImageId="three")
        assert len(response["FaceRecords"]) == 2
        assert [u["Reasons"] for u in response["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]]
        widths = [r["Face"]["BoundingBox"]["Width"] for r in response["FaceRecords"]]
        assert min(widths) > response["UnindexedFaces"][0]["FaceDetail"]["BoundingBox"]["Width"]
        assert all("Gender" in r["FaceDetail"] for r in response["FaceRecords"])
        assert {r["Face"]["ExternalImageId"] for r in response["FaceRecords"]} == {"three"}
        assert len({r["Face"]["ImageId"] for r in response["FaceRecords"]}) == 1

        blurred = np.asarray(face.resize((65, 80)).filter(ImageFilter.GaussianBlur(3)))
        small = Image.new("RGB", (300, 300), (128, 128, 128))
        small.paste(Image.fromarray(blurred), (100, 100))
        buffer = io.BytesIO()
        small.save(buffer, "PNG")
        strict = client.index_faces(CollectionId="options", Image={"Bytes": buffer.getvalue()},
                                    QualityFilter="HIGH")
        assert strict["FaceRecords"] == []
        assert strict["UnindexedFaces"] and strict["UnindexedFaces"][0]["Reasons"]
        assert client.describe_collection(CollectionId="options")["FaceCount"] == 2
        with pytest.raises(client.exceptions.InvalidImageFormatException):
            client.index_faces(CollectionId="options", Image={"Bytes": b"GIF89a not really"})
        with pytest.raises(client.exceptions.InvalidParameterException):
            client.index_faces(CollectionId="options", Image={"Bytes": buffer.getvalue()},
                               QualityFilter="SUPERB")
        assert client.describe_collection(CollectionId="options")["FaceCount"] == 2
    finally:
        client.delete_collection(CollectionId="options")


def test_delete_faces(client, people):
    client.create_collection(CollectionId="deleting")
    try:
        name = next(iter(people))
        ids = [client.index_faces(CollectionId="deleting", Image={"Bytes": photo}, MaxFaces=1)
               ["FaceRecords"][0]["Face"]["FaceId"] for photo in people[name][:3]]
        missing = "00000000-0000-4000-8000-000000000000"
        response = client.delete_faces(CollectionId="deleting", FaceIds=ids[:2] + [missing])
        assert sorted(response["DeletedFaces"]) == sorted(ids[:2])
        assert response["UnsuccessfulFaceDeletions"] == [{"FaceId": missing, "Reasons": ["FACE_NOT_FOUND"]}]
        listed = [f["FaceId"] for f in client.list_faces(CollectionId="deleting")["Faces"]]
        assert listed == [ids[2]]
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.search_faces(CollectionId="deleting", FaceId=ids[0])
        matches = client.search_faces_by_image(CollectionId="deleting", Image={"Bytes": people[name][0]},
                                               FaceMatchThreshold=0)["FaceMatches"]
        assert [m["Face"]["FaceId"] for m in matches] == [ids[2]]
        assert client.describe_collection(CollectionId="deleting")["FaceCount"] == 1
    finally:
        client.delete_collection(CollectionId="deleting")


def test_users(client, gallery, people):
    first, second = list(gallery)[:2]
    client.create_user(CollectionId="people", UserId="user-1")
    with pytest.raises(client.exceptions.ConflictException):
        client.create_user(CollectionId="people", UserId="user-1")
    assert client.list_users(CollectionId="people")["Users"] == [{"UserId": "user-1", "UserStatus": "CREATED"}]

    associated = client.associate_faces(CollectionId="people", UserId="user-1", FaceIds=gallery[first])
    assert sorted(f["FaceId"] for f in associated["AssociatedFaces"]) == sorted(gallery[first])
    assert associated["UserStatus"] == "ACTIVE"
    # Another person's face does not join: it does not match the user's faces.
    refused = client.associate_faces(CollectionId="people", UserId="user-1", FaceIds=gallery[second][:1])
    assert refused["AssociatedFaces"] == []
    assert refused["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["LOW_MATCH_CONFIDENCE"]

    by_face = client.search_users(CollectionId="people", FaceId=gallery[first][0])
    assert by_face["UserMatches"][0]["User"]["UserId"] == "user-1"
    by_image = client.search_users_by_image(CollectionId="people", Image={"Bytes": people[first][3]})
    assert by_image["UserMatches"][0]["User"] == {"UserId": "user-1", "UserStatus": "ACTIVE"}
    assert "FaceDetail" in by_image["SearchedFace"]
    stranger = client.search_users_by_image(CollectionId="people", Image={"Bytes": people[second][3]},
                                            UserMatchThreshold=95)
    assert stranger["UserMatches"] == []
    listed = client.list_faces(CollectionId="people", UserId="user-1")["Faces"]
    assert sorted(f["FaceId"] for f in listed) == sorted(gallery[first])

    blocked = client.delete_faces(CollectionId="people", FaceIds=gallery[first][:1])
    assert blocked["DeletedFaces"] == []
    assert blocked["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]

    released = client.disassociate_faces(CollectionId="people", UserId="user-1", FaceIds=gallery[first])
    assert len(released["DisassociatedFaces"]) == 3 and released["UserStatus"] == "CREATED"
    client.delete_user(CollectionId="people", UserId="user-1")
    assert client.list_users(CollectionId="people")["Users"] == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_user(CollectionId="people", UserId="user-1")
    assert client.describe_collection(CollectionId="people")["FaceCount"] == 3 * PEOPLE


def test_detect_and_compare_over_the_wire(client, people):
    name = next(iter(people))
    detected = client.detect_faces(Image={"Bytes": people[name][0]}, Attributes=["ALL"])
    assert detected["FaceDetails"] and "Gender" in detected["FaceDetails"][0]
    same = client.compare_faces(SourceImage={"Bytes": people[name][0]}, TargetImage={"Bytes": people[name][1]})
    assert same["FaceMatches"] and same["FaceMatches"][0]["Similarity"] >= 80
    stranger = list(people)[PEOPLE]
    other = client.compare_faces(SourceImage={"Bytes": people[name][0]},
                                 TargetImage={"Bytes": people[stranger][0]}, SimilarityThreshold=99)
    assert other["FaceMatches"] == []
