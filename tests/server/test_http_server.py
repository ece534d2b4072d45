"""``faceaudit serve`` as a user runs it, driven by an unmodified boto3 client.

A real server subprocess (tests/server/conftest.py) on a free port of
127.0.0.1. Images are scikit-image's public-domain astronaut photo.
"""

from __future__ import annotations

import io
import json
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from faceaudit.rekognition.faces import compare_faces, detect_faces


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mirrored_jpeg(astronaut_rgb) -> bytes:
    return _jpeg(np.ascontiguousarray(astronaut_rgb[:, ::-1]))


def _as_json(value):
    """What an in-process result looks like after a trip through JSON."""
    return json.loads(json.dumps(value, default=lambda v: v.item()))


def _without_metadata(response: dict) -> dict:
    response = dict(response)
    response.pop("ResponseMetadata")
    return response


def _error(call) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()
    return info.value


# ------------------------------------------------------------------ same answers as in-process


def test_detect_faces_over_the_wire_equals_in_process(rekognition, faceaudit_server, engine, astronaut_jpeg):
    response = rekognition.detect_faces(Image={"Bytes": astronaut_jpeg}, Attributes=["ALL"])
    local = detect_faces(engine, astronaut_jpeg, ["ALL"])
    assert _without_metadata(response) == _as_json(local)
    assert len(response["FaceDetails"]) >= 1 and "AgeRange" in response["FaceDetails"][0]

    request_id = response["ResponseMetadata"]["RequestId"]
    uuid.UUID(request_id)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    line = faceaudit_server.log_for(request_id)
    assert "op=DetectFaces status=200" in line and "dispatched=yes" in line


def test_compare_faces_over_the_wire_equals_in_process(rekognition, engine, astronaut_jpeg, mirrored_jpeg):
    response = rekognition.compare_faces(SourceImage={"Bytes": astronaut_jpeg},
                                         TargetImage={"Bytes": mirrored_jpeg}, SimilarityThreshold=70)
    local = compare_faces(engine, astronaut_jpeg, mirrored_jpeg, 70)
    assert _without_metadata(response) == _as_json(local)
    assert response["FaceMatches"] and response["FaceMatches"][0]["Similarity"] > 70


def test_health(faceaudit_server):
    import urllib.request
    with urllib.request.urlopen(faceaudit_server.endpoint_url + "/", timeout=10) as answer:
        assert json.load(answer) == {"service": "faceaudit", "status": "ok"}


# ------------------------------------------------------------------------ authentication


def test_wrong_secret(faceaudit_server, astronaut_jpeg):
    client = faceaudit_server.client(secret_access_key="wrong-secret-wrong-secret-wrong-secret-00")
    error = _error(lambda: client.compare_faces(SourceImage={"Bytes": astronaut_jpeg},
                                                TargetImage={"Bytes": astronaut_jpeg}))
    assert error.response["Error"]["Code"] == "InvalidSignatureException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # rejected before anything else: the service never saw it
    line = faceaudit_server.log_for(error.response["ResponseMetadata"]["RequestId"])
    assert "error=InvalidSignatureException dispatched=no" in line


def test_unknown_access_key(faceaudit_server, astronaut_jpeg):
    client = faceaudit_server.client(access_key_id="AKIANOTKNOWNHERE0000")
    error = _error(lambda: client.detect_faces(Image={"Bytes": astronaut_jpeg}))
    assert error.response["Error"] == {
        "Code": "UnrecognizedClientException",
        "Message": "The security token included in the request is invalid."}


def test_unsigned_request(faceaudit_server, astronaut_jpeg):
    answer = faceaudit_server.post({"Image": {"Bytes": "AAAA"}}, sign=False)
    assert (answer.status, answer.error_code) == (400, "MissingAuthenticationTokenException")
    assert answer.json["message"] == "Request is missing Authentication Token"
    assert "dispatched=no" in faceaudit_server.log_for(answer.request_id)


def test_signature_from_20_minutes_ago(faceaudit_server):
    then = datetime.now(UTC) - timedelta(minutes=20)
    answer = faceaudit_server.post({"Image": {"Bytes": "AAAA"}}, when=then)
    assert (answer.status, answer.error_code) == (400, "InvalidSignatureException")
    assert answer.json["message"].startswith("Signature expired: ")


def test_rejected_request_changes_nothing(faceaudit_server, rekognition):
    """A wrongly signed CreateCollection creates nothing (a real side effect, observed)."""
    collection = f"http-auth-{uuid.uuid4().hex[:8]}"
    wrong = faceaudit_server.client(secret_access_key="wrong-secret-wrong-secret-wrong-secret-00")
    error = _error(lambda: wrong.create_collection(CollectionId=collection))
    if "not supported" in error.response["Error"]["Message"]:
        pytest.skip("CreateCollection is not implemented by the service yet")
    assert error.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(rekognition.exceptions.ResourceNotFoundException):
        rekognition.describe_collection(CollectionId=collection)


# ------------------------------------------------------------------------ request errors


def test_bad_image_bytes(rekognition):
    with pytest.raises(rekognition.exceptions.InvalidImageFormatException) as info:
        rekognition.detect_faces(Image={"Bytes": b"this is not an image"})
    assert info.value.response["Error"]["Code"] == "InvalidImageFormatException"


def test_6_mb_image(rekognition, faceaudit_server):
    with pytest.raises(rekognition.exceptions.ImageTooLargeException) as info:
        rekognition.detect_faces(Image={"Bytes": os.urandom(6 * 1024 * 1024)})
    assert "5242880" in info.value.response["Error"]["Message"]
    assert "dispatched=no" in faceaudit_server.log_for(info.value.response["ResponseMetadata"]["RequestId"])


def test_body_larger_than_any_request_is_refused_unread(rekognition):
    with pytest.raises(rekognition.exceptions.ImageTooLargeException):
        rekognition.compare_faces(SourceImage={"Bytes": b"\0" * 9_000_000}, TargetImage={"Bytes": b"\0" * 9_000_000})


def test_similarity_threshold_out_of_range(rekognition, astronaut_jpeg):
    with pytest.raises(rekognition.exceptions.InvalidParameterException) as info:
        rekognition.compare_faces(SourceImage={"Bytes": astronaut_jpeg}, TargetImage={"Bytes": astronaut_jpeg},
                                  SimilarityThreshold=150)
    assert info.value.response["Error"]["Message"] == (
        "1 validation error detected: Value '150' at 'similarityThreshold' failed to satisfy "
        "constraint: Member must have value less than or equal to 100")


def test_max_faces_over_the_model_maximum(rekognition, astronaut_jpeg):
    """botocore does not check maxima; the server does, as Rekognition does."""
    with pytest.raises(rekognition.exceptions.InvalidParameterException) as info:
        rekognition.search_faces_by_image(CollectionId="any", Image={"Bytes": astronaut_jpeg}, MaxFaces=5000)
    message = info.value.response["Error"]["Message"]
    assert "not supported" in message or "Value '5000' at 'maxFaces'" in message


def test_malformed_json(faceaudit_server):
    answer = faceaudit_server.post(b'{"Image": {"Bytes": ')
    assert (answer.status, answer.error_code) == (400, "SerializationException")


def test_unknown_operation(faceaudit_server):
    answer = faceaudit_server.post({}, target="RekognitionService.MakeCoffee")
    assert (answer.status, answer.error_code) == (400, "UnknownOperationException")
    assert answer.json["message"] == "Unknown operation 'RekognitionService.MakeCoffee'"


def test_every_response_has_a_request_id(faceaudit_server):
    for answer in (faceaudit_server.post({}, sign=False), faceaudit_server.post(b"{"),
                   faceaudit_server.post({}, target=None)):
        uuid.UUID(answer.request_id)
        assert answer.headers.get("x-amzn-ErrorType") or answer.headers.get("x-amzn-errortype")


# --------------------------------------------------------------------- credentials, lifecycle


def test_generated_credentials_are_stored_0600_and_reused(tmp_path, start_faceaudit_server):
    data = tmp_path / "data"
    first = start_faceaudit_server(data, credentials=None)
    path = data / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    stored = json.loads(path.read_text())
    log = first.log()
    assert "generated credentials" in log and stored["secret_access_key"] in log  # shown once...
    client = first.client(access_key_id=stored["access_key_id"],
                          secret_access_key=stored["secret_access_key"])
    with pytest.raises(client.exceptions.InvalidImageFormatException):  # authenticated
        client.detect_faces(Image={"Bytes": b"not an image"})
    assert first.stop() == 0  # graceful shutdown
    assert "faceaudit: stopped" in first.log()

    second = start_faceaudit_server(data, credentials=None)
    assert json.loads(path.read_text()) == stored
    assert stored["secret_access_key"] not in second.log()  # ...and only once
    client = second.client(access_key_id=stored["access_key_id"],
                           secret_access_key=stored["secret_access_key"])
    with pytest.raises(client.exceptions.InvalidImageFormatException):
        client.detect_faces(Image={"Bytes": b"not an image"})


def test_two_worker_processes(tmp_path, start_faceaudit_server, astronaut_jpeg):
    server = start_faceaudit_server(tmp_path / "data", extra_args=("--workers", "2"))
    client = server.client()
    for _ in range(4):
        assert len(client.detect_faces(Image={"Bytes": astronaut_jpeg})["FaceDetails"]) >= 1
    assert server.stop() == 0
    assert server.log().count("faceaudit: stopped") == 2  # each worker closed its store
