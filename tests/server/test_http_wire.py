"""The JSON 1.1 codec against botocore's own serializer and parser (no server, no engine).

Whatever boto3 puts on the wire must decode to the dict the boto3 user passed;
whatever the codec writes must parse, in botocore, to the dict the service
returned; errors must reach botocore under their exact code.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from faceaudit.errors import (
    ImageTooLargeException,
    InvalidParameterException,
    InvalidSignatureException,
    ResourceNotFoundException,
)
from faceaudit.server.wire import (
    RekognitionProtocol,
    SerializationException,
    UnknownOperationException,
)

P = RekognitionProtocol.default()


def op(name):
    return P.operation(f"RekognitionService.{name}")


def boto3_body(name: str, params: dict) -> bytes:
    """The body botocore sends for ``client.<name>(**params)``."""
    serializer = create_serializer("json", include_validation=True)
    return serializer.serialize_to_request(params, P.model.operation_model(name))["body"]


def boto3_parse(name: str, status: int, body: bytes, headers: dict | None = None) -> dict:
    """What boto3 returns (or puts in ClientError.response) for this HTTP answer."""
    parser = create_parser("json")
    response = {"status_code": status, "headers": headers or {}, "body": body}
    return parser.parse(response, P.model.operation_model(name).output_shape)


def decode(name: str, payload) -> dict:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return P.decode_request(op(name), body)


def violation(name: str, payload) -> str:
    with pytest.raises(InvalidParameterException) as info:
        decode(name, payload)
    return info.value.message


# ------------------------------------------------------------------------------ requests


@pytest.mark.parametrize("name, params", [
    ("DetectFaces", {"Image": {"Bytes": b"\xff\xd8\xff\x00binary"}, "Attributes": ["ALL", "GENDER"]}),
    ("CompareFaces", {"SourceImage": {"Bytes": b"a" * 100}, "TargetImage": {"S3Object": {
        "Bucket": "bucket", "Name": "n.jpg", "Version": "3"}}, "SimilarityThreshold": 42.5,
        "QualityFilter": "NONE"}),
    ("IndexFaces", {"CollectionId": "my.coll-1", "Image": {"Bytes": b"x"}, "ExternalImageId": "a:b",
                    "MaxFaces": 3, "DetectionAttributes": ["DEFAULT"]}),
    ("SearchFacesByImage", {"CollectionId": "c", "Image": {"Bytes": b"x"}, "MaxFaces": 4096,
                            "FaceMatchThreshold": 0}),
    ("CreateCollection", {"CollectionId": "c", "Tags": {"team": "vision", "cost centre": "42"}}),
    ("ListFaces", {"CollectionId": "c", "NextToken": "abc", "MaxResults": 10}),
    ("DeleteFaces", {"CollectionId": "c", "FaceIds": ["11111111-2222-3333-4444-555555555555"]}),
])
def test_what_boto3_sends_decodes_to_what_the_user_passed(name, params):
    assert decode(name, boto3_body(name, params)) == params


def test_every_operation_decodes_an_empty_request_or_names_what_is_missing():
    for name in P.operation_names:
        try:
            decode(name, b"{}")
        except InvalidParameterException as error:
            assert "Member must not be null" in error.message
    assert decode("ListCollections", b"") == {}  # an empty body is an empty request


def test_json_null_is_an_absent_member():
    assert decode("DetectFaces", {"Image": {"Bytes": "AAAA"}, "Attributes": None}) == {
        "Image": {"Bytes": b"\0\0\0"}}


def test_non_finite_floats_as_botocore_writes_them():
    params = {"SourceImage": {"Bytes": b"x"}, "TargetImage": {"Bytes": b"x"}, "SimilarityThreshold": float("nan")}
    message = violation("CompareFaces", boto3_body("CompareFaces", params))
    assert "Value 'NaN' at 'similarityThreshold'" in message


# ------------------------------------------------------------------------------ validation


def test_maximum_that_botocore_does_not_check():
    params = {"CollectionId": "c", "Image": {"Bytes": b"x"}, "MaxFaces": 5000}
    assert violation("SearchFacesByImage", boto3_body("SearchFacesByImage", params)) == (
        "1 validation error detected: Value '5000' at 'maxFaces' failed to satisfy constraint: "
        "Member must have value less than or equal to 4096")


def test_required_member():
    assert violation("SearchFacesByImage", {"Image": {"Bytes": "AA=="}}) == (
        "1 validation error detected: Value null at 'collectionId' failed to satisfy constraint: "
        "Member must not be null")


def test_all_violations_are_listed():
    message = violation("SearchFacesByImage", {"CollectionId": "has space", "Image": {"Bytes": "AA=="},
                                               "MaxFaces": 0, "QualityFilter": "BEST"})
    assert message.startswith("3 validation errors detected: ")
    assert "Value 'has space' at 'collectionId' failed to satisfy constraint: Member must satisfy " \
           "regular expression pattern: [a-zA-Z0-9_.\\-]+" in message
    assert "Value '0' at 'maxFaces' failed to satisfy constraint: Member must have value greater " \
           "than or equal to 1" in message
    assert "Value 'BEST' at 'qualityFilter' failed to satisfy constraint: Member must satisfy enum " \
           "value set: [NONE, AUTO, LOW, MEDIUM, HIGH]" in message


def test_string_lengths_and_nested_paths():
    assert "at 'collectionId' failed to satisfy constraint: Member must have length greater than " \
           "or equal to 1" in violation("ListFaces", {"CollectionId": ""})
    message = violation("CompareFaces", {"SourceImage": {"S3Object": {"Bucket": "b", "Name": ""}},
                                         "TargetImage": {"Bytes": "AA=="}})
    assert "at 'sourceImage.s3Object.name'" in message
    message = violation("DetectFaces", {"Image": {"Bytes": "AA=="}, "Attributes": ["ALL", "SMILES"]})
    assert "Value 'SMILES' at 'attributes.2.member' failed to satisfy constraint: Member must " \
           "satisfy enum value set" in message


def test_list_length():
    message = violation("DeleteFaces", {"CollectionId": "c", "FaceIds": []})
    assert "at 'faceIds' failed to satisfy constraint: Member must have length greater than or equal to 1" \
        in message


def test_tag_patterns_with_unicode_classes():
    decode("CreateCollection", {"CollectionId": "c", "Tags": {"équipe": "vision 2"}})
    assert "at 'tags.key'" in violation("CreateCollection", {"CollectionId": "c", "Tags": {"aws:x": "v"}})


def test_unknown_member():
    message = violation("DetectFaces", {"Image": {"Bytes": "AA==", "Url": "http://x"}, "Foo": 1})
    assert message.startswith("2 validation errors detected: ")
    assert "Unknown parameter 'Url' in 'image'; valid parameters are: Bytes, S3Object" in message
    assert "Unknown parameter 'Foo'" in message


def test_empty_image_is_a_validation_error():
    assert "at 'image.bytes' failed to satisfy constraint: Member must have length greater than or " \
           "equal to 1" in violation("DetectFaces", {"Image": {"Bytes": ""}})


def test_image_over_5_mb_is_image_too_large_whatever_else_is_wrong():
    big = base64.b64encode(b"\0" * (5 * 1024 * 1024 + 1)).decode()
    with pytest.raises(ImageTooLargeException) as info:
        decode("CompareFaces", {"SourceImage": {"Bytes": "AA=="}, "TargetImage": {"Bytes": big},
                                "SimilarityThreshold": 500})
    assert "'targetImage.bytes' is 5242881 bytes; the limit is 5242880 bytes" in info.value.message
    decode("DetectFaces", {"Image": {"Bytes": base64.b64encode(b"\0" * 5 * 1024 * 1024).decode()}})


@pytest.mark.parametrize("body", [
    b"{", b"not json", b"[]", b'"x"', b"\xff", b"[" * 100000,
    json.dumps({"Image": {"Bytes": 12}}).encode(),
    json.dumps({"Image": {"Bytes": "!!not base64!!"}}).encode(),
    json.dumps({"Image": "AAAA"}).encode(),
    json.dumps({"Image": {"Bytes": "AA=="}, "Attributes": "ALL"}).encode(),
])
def test_bodies_that_do_not_deserialise(body):
    with pytest.raises(SerializationException):
        decode("DetectFaces", body)


@pytest.mark.parametrize("value", [True, "5", 1.5, [1]])
def test_wrong_scalar_types(value):
    with pytest.raises(SerializationException):
        decode("SearchFacesByImage", {"CollectionId": "c", "Image": {"Bytes": "AA=="}, "MaxFaces": value})


def test_integral_float_is_an_integer():
    assert decode("ListFaces", {"CollectionId": "c", "MaxResults": 5.0})["MaxResults"] == 5


# ------------------------------------------------------------------------------- targets


def test_targets():
    assert P.operation("RekognitionService.DetectFaces").name == "DetectFaces"
    for target in (None, "", "DetectFaces", "RekognitionService.", "Rekognition.DetectFaces",
                   "RekognitionService.detectfaces", "RekognitionService.DetectFaces.x"):
        with pytest.raises(UnknownOperationException):
            P.operation(target)


# ------------------------------------------------------------------------------ responses


def test_response_round_trips_through_botocore():
    created = datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)
    response = {"FaceCount": 3, "FaceModelVersion": "faceaudit-dlib-1", "CollectionARN": "arn:aws:x",
                "CreationTimestamp": created, "UserCount": None}
    body = P.encode_response(op("DescribeCollection"), response)
    assert json.loads(body)["CreationTimestamp"] == created.timestamp()
    parsed = boto3_parse("DescribeCollection", 200, body)
    parsed.pop("ResponseMetadata", None)
    assert parsed == {k: v for k, v in response.items() if v is not None}


def test_detect_faces_response_round_trips():
    response = {"FaceDetails": [{"BoundingBox": {"Width": 0.25, "Height": 0.5, "Left": -0.01, "Top": 0.1},
                                 "AgeRange": {"Low": 28, "High": 35}, "Confidence": 99.99,
                                 "Landmarks": [{"Type": "eyeLeft", "X": 0.3, "Y": 0.4}],
                                 "Gender": {"Value": "Female", "Confidence": 97.0}}]}
    parsed = boto3_parse("DetectFaces", 200, P.encode_response(op("DetectFaces"), response))
    parsed.pop("ResponseMetadata", None)
    assert parsed == response


@pytest.mark.parametrize("error", [
    InvalidParameterException("bad MaxFaces"),
    ResourceNotFoundException("The collection id: c does not exist"),
    ImageTooLargeException("too big"),
    InvalidSignatureException("Signature expired: ..."),
    SerializationException("not JSON"),
    UnknownOperationException("Unknown operation 'X'"),
])
def test_errors_reach_botocore_under_their_exact_code(error):
    status, body = P.encode_error(error)
    assert status == 400
    parsed = boto3_parse("DetectFaces", status, body, {"x-amzn-requestid": "rid-1"})
    assert parsed["Error"] == {"Code": error.code, "Message": error.message}
    assert parsed["ResponseMetadata"]["RequestId"] == "rid-1"
