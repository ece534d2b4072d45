"""A collection stays bound to the model it was created with (issue 9).

CreateCollection records the serving engine's model_version as FaceModelVersion;
every operation that compares or stores vectors refuses a collection of another
model with InvalidParameterException naming both models and how to serve it.
Both engines are real (dlib and SFace) over one real EmbeddedStore folder, first
through the service functions, then through two real `faceaudit serve` processes.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from faceaudit.datasets import faces_dev
from faceaudit.errors import InvalidParameterException
from faceaudit.rekognition.service import RekognitionService
from faceaudit.runtime import default_engine, engine_spec
from faceaudit.storage import EmbeddedStore


def client_error(excinfo) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.fixture(scope="module")
def photos(faces_dev_root):
    """Two photos each of two LFW people (identity-labelled research photos)."""
    by_person = defaultdict(list)
    for label in faces_dev.read_labels(faces_dev_root):
        if label.identity:
            by_person[label.identity].append(faces_dev_root / label.path)
    people = [name for name in sorted(by_person) if len(by_person[name]) >= 2][:2]
    return [[path.read_bytes() for path in sorted(by_person[name])[:2]] for name in people]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """A dlib service and an SFace service over the same store folder."""
    folder = tmp_path_factory.mktemp("binding-store")
    stores = [EmbeddedStore(folder), EmbeddedStore(folder)]
    yield (RekognitionService(default_engine("dlib"), stores[0]),
           RekognitionService(default_engine("sface"), stores[1]))
    for store in stores:
        store.close()


def _index(service: RekognitionService, collection_id: str, photo: bytes) -> str:
    response = service.call("IndexFaces", {"CollectionId": collection_id, "Image": {"Bytes": photo},
                                           "MaxFaces": 1, "QualityFilter": "NONE"})
    return response["FaceRecords"][0]["Face"]["FaceId"]


def test_collections_record_the_serving_engines_model(services):
    dlib, sface = services
    assert dlib.call("CreateCollection", {"CollectionId": "made-by-dlib"})["FaceModelVersion"] == "1.0"
    assert sface.call("CreateCollection", {"CollectionId": "made-by-sface"})["FaceModelVersion"] == "2.0"
    # Either engine describes and lists both: reading metadata compares no vectors.
    for service in services:
        assert service.call("DescribeCollection", {"CollectionId": "made-by-sface"})["FaceModelVersion"] == "2.0"
        listed = service.call("ListCollections", {})
        versions = dict(zip(listed["CollectionIds"], listed["FaceModelVersions"]))
        assert versions["made-by-dlib"] == "1.0" and versions["made-by-sface"] == "2.0"
    for service, collection_id in ((dlib, "made-by-dlib"), (sface, "made-by-sface")):
        service.call("DeleteCollection", {"CollectionId": collection_id})


def test_every_vector_operation_refuses_a_collection_of_another_model(services, photos):
    dlib, sface = services
    dlib.call("CreateCollection", {"CollectionId": "bound"})
    face_ids = [_index(dlib, "bound", photo) for photo in photos[0]]
    dlib.call("CreateUser", {"CollectionId": "bound", "UserId": "person"})
    probe = {"Bytes": photos[0][1]}
    refused = {
        "IndexFaces": {"CollectionId": "bound", "Image": {"Bytes": photos[1][0]}},
        "SearchFaces": {"CollectionId": "bound", "FaceId": face_ids[0]},
        "SearchFacesByImage": {"CollectionId": "bound", "Image": probe},
        "SearchUsers": {"CollectionId": "bound", "FaceId": face_ids[0]},
        "SearchUsersByImage": {"CollectionId": "bound", "Image": probe},
        "AssociateFaces": {"CollectionId": "bound", "UserId": "person", "FaceIds": face_ids},
    }
    for operation, request in refused.items():
        with pytest.raises(InvalidParameterException) as excinfo:
            sface.call(operation, request)
        message = str(excinfo.value)
        assert "model version 1.0 (engine dlib)" in message, (operation, message)
        assert "model version 2.0 (engine sface, faceaudit's default)" in message, (operation, message)
        # The two ways out, for a collection made before the default moved to sface.
        assert "`faceaudit serve --engine dlib`" in message, (operation, message)
        assert "index the original photos into it again" in message, (operation, message)
    # Nothing was stored by the refused calls, and the collection still works for its own model.
    assert dlib.call("DescribeCollection", {"CollectionId": "bound"})["FaceCount"] == 2
    found = dlib.call("SearchFaces", {"CollectionId": "bound", "FaceId": face_ids[0]})
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_ids[1]]


def test_a_collection_created_under_sface_works_under_sface_and_not_under_dlib(services, photos):
    dlib, sface = services
    sface.call("CreateCollection", {"CollectionId": "sface-people"})
    first = {person: _index(sface, "sface-people", person_photos[0]) for person, person_photos in
             enumerate(photos)}
    for person, person_photos in enumerate(photos):
        found = sface.call("SearchFacesByImage", {"CollectionId": "sface-people", "Image": {"Bytes": person_photos[1]},
                                                  "FaceMatchThreshold": 80})
        assert found["FaceModelVersion"] == "2.0"
        assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [first[person]]
    with pytest.raises(InvalidParameterException, match=r"--engine sface"):
        dlib.call("SearchFacesByImage", {"CollectionId": "sface-people", "Image": {"Bytes": photos[0][1]}})


def test_a_restarted_server_refuses_a_collection_of_the_other_engine(start_faceaudit_server, tmp_path, photos):
    """The upgrade path: index under dlib (the default before sface), serve the same data folder with
    the default engine (two workers, so the name reaches them through the environment): searching
    the dlib collection is refused with both ways out; a collection created under sface works."""
    data_dir = tmp_path / "data"
    server = start_faceaudit_server(data_dir, extra_args=("--engine", "dlib"))
    client = server.client()
    client.create_collection(CollectionId="dlib-people")
    client.index_faces(CollectionId="dlib-people", Image={"Bytes": photos[0][0]}, MaxFaces=1)
    server.stop()

    server = start_faceaudit_server(data_dir, extra_args=("--workers", "2"))
    client = server.client()
    with pytest.raises(client.exceptions.InvalidParameterException) as excinfo:
        client.search_faces_by_image(CollectionId="dlib-people", Image={"Bytes": photos[0][1]})
    code, message = client_error(excinfo)
    assert code == "InvalidParameterException"
    assert "1.0 (engine dlib)" in message and "2.0 (engine sface, faceaudit's default)" in message
    assert "--engine dlib" in message and "index the original photos" in message
    assert client.describe_collection(CollectionId="dlib-people")["FaceModelVersion"] == "1.0"

    # Whichever worker answers, it runs SFace.
    for n in range(4):
        assert client.create_collection(CollectionId=f"sface-{n}")["FaceModelVersion"] == "2.0"
    indexed = client.index_faces(CollectionId="sface-0", Image={"Bytes": photos[0][0]}, MaxFaces=1)
    assert indexed["FaceModelVersion"] == "2.0"
    found = client.search_faces_by_image(CollectionId="sface-0", Image={"Bytes": photos[0][1]})
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [indexed["FaceRecords"][0]["Face"]["FaceId"]]
    # The start-up note quotes SFace's own per-group table, not dlib's.
    rates = engine_spec("sface").group_false_match_rates().thresholds["80"]
    highest = max(rates.values(), key=lambda r: r["rate"])
    note = " ".join(server.log().split())
    assert "engine sface (model version 2.0)" in note and f"{highest['rate']:.2%}" in note
