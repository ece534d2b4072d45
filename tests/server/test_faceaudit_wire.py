"""faceaudit's own service model through the same JSON 1.1 codec as Rekognition's (no server, no engine)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

import faceaudit
from faceaudit.errors import ConflictException, InvalidParameterException
from faceaudit.server.wire import (
    FACEAUDIT_TARGET_PREFIX,
    JsonProtocol,
    UnknownOperationException,
    faceaudit_service_model,
)

P = JsonProtocol.default()
ITEM = str(uuid.uuid4())


def op(name):
    return P.operation(f"{FACEAUDIT_TARGET_PREFIX}.{name}")


def test_one_protocol_serves_both_models_by_target_prefix():
    assert P.operation("RekognitionService.DetectFaces").service_model.service_name == "rekognition"
    assert op("GetReviewItem").service_model.service_name == "faceaudit"
    assert P.target_prefix_of(op("DecideReviewItem")) == "FaceAuditService"
    for target in ("FaceAuditService.DetectFaces", "RekognitionService.GetReviewItem", "FaceAuditService."):
        with pytest.raises(UnknownOperationException):
            P.operation(target)
    with pytest.raises(ValueError, match="target prefix"):
        JsonProtocol(faceaudit_service_model(), faceaudit_service_model())


def test_the_client_reads_the_model_the_server_decodes_with():
    client = faceaudit.client("http://127.0.0.1:1", region_name="us-east-1",
                              aws_access_key_id="AK", aws_secret_access_key="secret")
    model = client.meta.service_model
    assert model.signing_name == "rekognition"  # one SigV4 scope for both services
    assert sorted(model.operation_names) == sorted(faceaudit_service_model().operation_names) == [
        "DecideReviewItem", "GetReviewItem", "GetReviewResult", "GetTransparencyReport", "ListReviewItems",
        "ListReviewResults", "ListSearchLogRecords", "VerifySearchLog"]


def test_what_boto3_sends_decodes_to_what_the_user_passed():
    params = {"ItemId": ITEM, "Decisions": [
        {"CandidateId": str(uuid.uuid4()), "Decision": "CONFIRM", "Reason": "same scar above the left eye"}]}
    body = create_serializer("json", include_validation=True).serialize_to_request(
        params, op("DecideReviewItem"))["body"]
    assert P.decode_request(op("DecideReviewItem"), body) == params


def test_the_models_constraints_are_checked():
    with pytest.raises(InvalidParameterException, match="at 'itemId' failed to satisfy constraint"):
        P.decode_request(op("GetReviewItem"), json.dumps({"ItemId": "x" * 36}).encode())
    with pytest.raises(InvalidParameterException, match="Member must not be null"):
        P.decode_request(op("DecideReviewItem"), json.dumps({"ItemId": ITEM}).encode())
    too_many = [{"CandidateId": "a", "Decision": "REJECT", "Reason": "r"}] * 4097  # MaxFaces' bound, plus one
    with pytest.raises(InvalidParameterException, match="length less than or equal to 4096"):
        P.decode_request(op("DecideReviewItem"), json.dumps({"ItemId": ITEM, "Decisions": too_many}).encode())


def test_pictures_and_times_reach_boto3_as_bytes_and_datetimes():
    at = datetime(2026, 12, 1, 23, 15, 1, 123000, tzinfo=UTC)
    response = {"ItemId": ITEM, "CreatedAt": at, "Probe": b"\xff\xd8probe", "RequiredReviewers": 2,
                "Candidates": [{"CandidateId": "f1", "CandidateType": "FACE", "Crop": b"\xff\xd8crop"},
                               {"CandidateId": "f2", "CandidateType": "FACE", "Crop": None}]}
    body = P.encode_response(op("GetReviewItem"), response)
    parsed = create_parser("json").parse({"status_code": 200, "headers": {}, "body": body},
                                         op("GetReviewItem").output_shape)
    assert parsed["Probe"] == b"\xff\xd8probe" and parsed["CreatedAt"] == at
    assert parsed["Candidates"] == [{"CandidateId": "f1", "CandidateType": "FACE", "Crop": b"\xff\xd8crop"},
                                    {"CandidateId": "f2", "CandidateType": "FACE"}]


def test_review_errors_keep_their_codes():
    status, body = P.encode_error(ConflictException("Review item is closed"))
    parsed = create_parser("json").parse({"status_code": status, "headers": {}, "body": body},
                                         op("GetReviewItem").output_shape)
    assert status == 400 and parsed["Error"] == {"Code": "ConflictException", "Message": "Review item is closed"}


def test_the_log_reading_operations_bounds_and_lists_are_checked_by_the_model():
    listing = op("ListSearchLogRecords")
    for body, words in (({"MaxResults": 1001}, "less than or equal to 1000"),
                        ({"MaxResults": 0}, "greater than or equal to 1"),
                        ({"Kind": "gossip"}, "enum value set"), ({"Outcome": "maybe"}, "enum value set"),
                        ({"Since": ""}, "length greater than or equal to 1"),
                        ({"KeyName": "k" * 256}, "length less than or equal to 255")):
        with pytest.raises(InvalidParameterException, match=words):
            P.decode_request(listing, json.dumps(body).encode())
    with pytest.raises(InvalidParameterException, match="Member must not be null"):
        P.decode_request(op("GetTransparencyReport"), b"{}")
    assert P.decode_request(listing, json.dumps({"Kind": "unauthenticated", "MaxResults": 1000}).encode()) == {
        "Kind": "unauthenticated", "MaxResults": 1000}


def test_a_log_page_reaches_boto3_with_its_records_and_verify_with_its_problems():
    text = '{"hash":"ab","seq":7}'
    listed = {"Records": [{"Seq": 7, "Time": "2026-12-01T10:00:00.000Z", "Kind": "request", "Status": 403,
                           "Error": "AccessDeniedException", "KeyName": None, "Record": text}], "NextToken": "t"}
    body = P.encode_response(op("ListSearchLogRecords"), listed)
    parsed = create_parser("json").parse({"status_code": 200, "headers": {}, "body": body},
                                         op("ListSearchLogRecords").output_shape)
    assert parsed["Records"] == [{"Seq": 7, "Time": "2026-12-01T10:00:00.000Z", "Kind": "request", "Status": 403,
                                  "Error": "AccessDeniedException", "Record": text}]  # None dropped
    verified = {"Ok": False, "Records": 9, "Head": {"Seq": 6, "Hash": "f" * 64},
                "Problems": [{"Seq": 7, "Kind": "edited", "Message": "record 7 was edited"}]}
    body = P.encode_response(op("VerifySearchLog"), verified)
    parsed = create_parser("json").parse({"status_code": 200, "headers": {}, "body": body},
                                         op("VerifySearchLog").output_shape)
    assert {k: parsed[k] for k in verified} == verified


def test_the_listings_have_boto3_paginators():
    client = faceaudit.client("http://127.0.0.1:1", region_name="us-east-1",
                              aws_access_key_id="AK", aws_secret_access_key="secret")
    assert client.can_paginate("list_search_log_records") and client.can_paginate("list_review_items")
    assert client.can_paginate("list_review_results")
