"""The search log on the request path, in-process (the ASGI app in front of a fake service):
what a record holds, that it is on disk before the answer, and what is not logged one by one."""

from __future__ import annotations

import hashlib
import json

import pytest

from faceaudit.access import SQLiteKeyStore
from faceaudit.accountability.searchlog import SearchLog, read_data_dir
from faceaudit.server import sigv4
from faceaudit.server.access import StoreKeys
from faceaudit.server.app import RekognitionApp
from server.test_http_app import JPEG, FakeService, call, detect_payload, post, sign
from support.disk import fill_disk


@pytest.fixture
def keyed(tmp_path):
    """An app over a real key store (an operator and an auditor key) and a real search log."""
    keys = SQLiteKeyStore(tmp_path)
    operator = keys.create("analyst-1", "operator", "unit-7")
    auditor = keys.create("overseer", "auditor")
    service = FakeService()
    log = SearchLog(tmp_path)
    app = RekognitionApp(service, StoreKeys(keys), threads=2, search_log=log, on_shutdown=[log.close, keys.close])
    credentials = {
        "operator": sigv4.Credentials(operator.key.access_key_id, operator.secret_access_key),
        "auditor": sigv4.Credentials(auditor.key.access_key_id, auditor.secret_access_key)}
    yield app, service, credentials, tmp_path
    app.close()


def _records(data_dir) -> list[dict]:
    return [json.loads(text) for text in read_data_dir(data_dir).texts]


def test_an_answered_request_is_on_disk_before_the_answer_with_who_what_and_the_image_hash(keyed):
    app, service, creds, data_dir = keyed
    service.answers["DetectFaces"] = {"FaceDetails": [{"Confidence": 99.0}, {"Confidence": 98.0}]}
    status, headers, *_ = post(app, detect_payload(), key=creds["operator"])
    assert status == 200
    (record,) = _records(data_dir)  # read from the file right after the answer, by another connection
    assert record["request_id"] == headers["x-amzn-requestid"]
    assert record["key"] == {"name": "analyst-1", "access_key_id": creds["operator"].access_key_id,
                             "role": "operator", "unit": "unit-7"}
    assert (record["kind"], record["operation"], record["status"], record["error"]) == \
        ("request", "DetectFaces", 200, None)
    assert record["image_sha256"] == [hashlib.sha256(JPEG).hexdigest()]
    assert record["result"] == {"faces": 2}
    assert JPEG.hex() not in json.dumps(record) and "Bytes" not in json.dumps(record)
    assert read_data_dir(data_dir).verify().ok


def test_a_role_denial_is_logged_with_its_reason(keyed):
    app, service, creds, data_dir = keyed
    status, _headers, _, parsed, _ = post(app, detect_payload(), key=creds["auditor"])
    assert status == 400 and parsed["__type"] == "AccessDeniedException"
    (record,) = _records(data_dir)
    assert record["key"]["name"] == "overseer" and record["error"] == "AccessDeniedException"
    assert record["reason"] == "role auditor may not call DetectFaces"
    assert record["image_sha256"] == [hashlib.sha256(JPEG).hexdigest()]  # what it tried, though never decoded
    assert service.calls == []


def test_only_a_signed_purpose_is_recorded(keyed):
    app, _, creds, data_dir = keyed
    body = json.dumps(detect_payload()).encode()
    stated = {"x-faceaudit-purpose": "missing person", "x-faceaudit-case": "C-1"}
    signed = sign(body, key=creds["operator"], extra=stated)
    assert call(app, headers=signed, body=body)[0] == 200
    unsigned = [*sign(body, key=creds["operator"]), ("x-faceaudit-purpose", "added on the way")]
    assert call(app, headers=unsigned, body=body)[0] == 200
    first, second = _records(data_dir)
    assert (first["purpose"], first["case"]) == ("missing person", "C-1")
    assert (second["purpose"], second["case"]) == (None, None)


def test_unverified_requests_are_counted_not_logged_one_by_one(keyed):
    app, _, creds, data_dir = keyed
    wrong = sigv4.Credentials(creds["operator"].access_key_id, "not-the-secret-" + "x" * 25)
    unknown = sigv4.Credentials("AKIDNOBODY0000000000", "y" * 40)
    for _ in range(15):
        assert post(app, detect_payload(), key=wrong)[3]["__type"] == "InvalidSignatureException"
    for _ in range(5):
        assert post(app, detect_payload(), key=unknown)[3]["__type"] == "UnrecognizedClientException"
    assert _records(data_dir) == []  # no disk write per garbage request
    app.close()  # shutdown writes the counts
    (record,) = _records(data_dir)
    assert record["kind"] == "unauthenticated" and record["key"] is None
    assert record["result"] == {"refused": 20}
    assert record["details"]["by_error"] == {"InvalidSignatureException": 15, "UnrecognizedClientException": 5}
    assert read_data_dir(data_dir).verify().ok


def test_the_counts_ride_on_the_next_record_once_due(keyed):
    app, _, creds, data_dir = keyed
    app.search_log.refused_interval = 0.0  # due at once
    unknown = sigv4.Credentials("AKIDNOBODY0000000000", "y" * 40)
    post(app, detect_payload(), key=unknown)
    post(app, detect_payload(), key=creds["operator"])
    kinds = [r["kind"] for r in _records(data_dir)]
    assert kinds[-1] == "request" and "unauthenticated" in kinds


def test_no_answer_leaves_without_its_record(keyed):
    app, service, creds, _data_dir = keyed
    service.answers["DetectFaces"] = {"FaceDetails": [{"Confidence": 99.0}]}
    app.search_log.close()  # the log can no longer be written
    status, _headers, body, parsed, _ = post(app, detect_payload(), key=creds["operator"])
    assert status == 500 and parsed["__type"] == "InternalServerError"
    assert "search log" in parsed["Message"] and b"FaceDetails" not in body


def test_a_full_disk_under_the_log_is_answered_as_out_of_storage(small_disk):
    keys = SQLiteKeyStore(small_disk / "data")
    operator = keys.create("analyst-1", "operator")
    log = SearchLog(small_disk / "data")
    service = FakeService()
    service.answers["DetectFaces"] = {"FaceDetails": [{"Confidence": 99.0}]}
    app = RekognitionApp(service, StoreKeys(keys), threads=2, search_log=log, on_shutdown=[keys.close],
                         data_dir=small_disk / "data")
    key = sigv4.Credentials(operator.key.access_key_id, operator.secret_access_key)
    filler = fill_disk(small_disk)
    try:
        outcomes = [post(app, detect_payload(JPEG * 2000), key=key) for _ in range(200)]
        refused = [o for o in outcomes if o[0] != 200]
        assert refused, "200 records were written to a full disk"
        status, _, body, parsed, _ = refused[0]
        assert status == 500 and "out of storage" in parsed["Message"] and b"FaceDetails" not in body
        filler.unlink()  # space is back: so is the log, and the chain is whole
        assert post(app, detect_payload(), key=key)[0] == 200
    finally:
        app.close()
        log.close()
    contents = read_data_dir(small_disk / "data")
    assert contents.verify().ok
    answered = sum(1 for o in outcomes if o[0] == 200) + 1
    assert len([r for r in contents.records() if r["kind"] == "request"]) == answered


def test_a_flood_of_unverified_requests_is_counted_exactly_and_written_in_few_records(keyed):
    app, _, _, data_dir = keyed
    app.search_log.refused_interval = 0.05
    unknown = sigv4.Credentials("AKIDNOBODY0000000000", "y" * 40)
    for _ in range(60):
        post(app, detect_payload(), key=unknown)
    app.close()
    aggregates = [r for r in _records(data_dir) if r["kind"] == "unauthenticated"]
    assert sum(r["result"]["refused"] for r in aggregates) == 60  # none lost, none counted twice
    assert len(aggregates) < 60
