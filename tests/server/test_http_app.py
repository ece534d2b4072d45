"""The ASGI app in-process, in front of a fake service that records every call.

These pin down what a real server cannot show directly: that a request failing
authentication, routing or validation never reaches ``service.call``, and how
each failure is answered.  Requests are signed by botocore's own SigV4 signer.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from faceaudit.access import KeyStoreUnavailable, SQLiteKeyStore
from faceaudit.errors import InvalidImageFormatException, ResourceNotFoundException
from faceaudit.server import sigv4
from faceaudit.server.access import StoreKeys
from faceaudit.server.app import MAX_BODY_BYTES, RekognitionApp

KEY = sigv4.Credentials("AKIDFACEAUDITTEST001", "test-secret-key-for-the-app-tests-00000")
HOST = "faceaudit.test:8000"
JPEG = b"\xff\xd8\xff" + b"\x00" * 100  # opaque to the fake service


class FakeService:
    operations = frozenset({"DetectFaces", "CompareFaces", "CreateCollection"})

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.answers: dict[str, object] = {}

    def call(self, operation, request):
        self.calls.append((operation, request))
        answer = self.answers.get(operation, {"FaceDetails": []})
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def service():
    return FakeService()


@pytest.fixture
def app(service):
    closed = []
    application = RekognitionApp(service, KEY, threads=2, on_shutdown=[lambda: closed.append(True)])
    application.closed = closed
    yield application
    application.close()


# ----------------------------------------------------------------------------- helpers


def sign(body: bytes, target: str | None = "RekognitionService.DetectFaces", *, key=KEY,
         when: datetime | None = None, region: str = "us-east-1", path: str = "/",
         extra: dict | None = None) -> list[tuple[str, str]]:
    """Headers of a request signed exactly as boto3 signs one (optionally at another time)."""
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    headers.update(extra or {})
    request = AWSRequest(method="POST", url=f"http://{HOST}{path}", data=body, headers=headers)
    signer = SigV4Auth(BotoCredentials(key.access_key_id, key.secret_access_key), "rekognition", region)
    if when is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            signer.add_auth(request)
    return [("host", HOST), ("content-length", str(len(body))), *request.headers.items()]


def call(app, method="POST", path="/", headers=(), body=b"", *, chunk: int | None = None):
    """Run one HTTP request through the ASGI app; (status, headers, body, parsed JSON or None)."""
    sent: list[dict] = []
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    queue = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
             for i, p in enumerate(pieces)]
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
        "method": method, "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
        "headers": [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    received = 0

    async def receive():
        nonlocal received
        received += 1
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    out_body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        parsed = json.loads(out_body) if out_body else None
    except ValueError:
        parsed = None
    return start["status"], out_headers, out_body, parsed, received


def post(app, payload, target="RekognitionService.DetectFaces", **sign_options):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(app, headers=sign(body, target, **sign_options), body=body)


def detect_payload(data: bytes = JPEG) -> dict:
    return {"Image": {"Bytes": base64.b64encode(data).decode()}, "Attributes": ["ALL"]}


# ------------------------------------------------------------------------------- happy path


def test_signed_request_reaches_the_service_with_python_types(app, service):
    service.answers["DetectFaces"] = {"FaceDetails": [{"Confidence": 99.5, "AgeRange": None}],
                                      "OrientationCorrection": None}
    status, headers, _, parsed, _ = post(app, detect_payload())
    assert status == 200
    assert service.calls == [("DetectFaces", {"Image": {"Bytes": JPEG}, "Attributes": ["ALL"]})]
    assert parsed == {"FaceDetails": [{"Confidence": 99.5}]}  # None dropped
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert len(headers["x-amzn-requestid"]) == 36


def test_request_ids_are_unique(app):
    ids = {post(app, detect_payload())[1]["x-amzn-requestid"] for _ in range(5)}
    assert len(ids) == 5


def test_health_needs_no_signature(app, service):
    status, headers, _, parsed, _ = call(app, "GET", "/")
    assert (status, parsed) == (200, {"service": "faceaudit", "status": "ok"})
    assert "x-amzn-requestid" in headers and service.calls == []


def test_body_in_many_chunks(app, service):
    body = json.dumps(detect_payload(JPEG * 50)).encode()
    status, *_ = call(app, headers=sign(body), body=body, chunk=100)
    assert status == 200 and service.calls[0][1]["Image"]["Bytes"] == JPEG * 50


# ------------------------------------------------------- rejected requests never reach the service


def _error(result):
    status, headers, _, parsed, _ = result
    assert parsed is not None and set(parsed) >= {"__type"}
    assert headers["x-amzn-errortype"] == parsed["__type"]
    message = parsed.get("message", parsed.get("Message"))
    return status, parsed["__type"], message


def test_unsigned_request(app, service):
    body = json.dumps(detect_payload()).encode()
    result = call(app, headers=[("host", HOST), ("x-amz-target", "RekognitionService.DetectFaces")],
                  body=body)
    assert _error(result) == (400, "MissingAuthenticationTokenException",
                              "Request is missing Authentication Token")
    assert service.calls == []


def test_wrong_secret(app, service):
    wrong = sigv4.Credentials(KEY.access_key_id, "not-the-secret-key-at-all-000000000000")
    status, code, message = _error(post(app, detect_payload(), key=wrong))
    assert (status, code) == (400, "InvalidSignatureException")
    assert "signature we calculated does not match" in message
    assert service.calls == []


def test_unknown_access_key(app, service):
    other = sigv4.Credentials("AKIDSOMEONEELSE00000", KEY.secret_access_key)
    assert _error(post(app, detect_payload(), key=other))[:2] == (400, "UnrecognizedClientException")
    assert service.calls == []


def test_expired_signature(app, service):
    then = datetime.now(UTC) - timedelta(minutes=20)
    status, code, message = _error(post(app, detect_payload(), when=then))
    assert (status, code) == (400, "InvalidSignatureException")
    assert message.startswith("Signature expired")
    assert service.calls == []


def test_body_altered_after_signing(app, service):
    body = json.dumps(detect_payload()).encode()
    headers = sign(body)
    tampered = body.replace(b"ALL", b"AGE")
    headers = [(k, str(len(tampered)) if k == "content-length" else v) for k, v in headers]
    assert _error(call(app, headers=headers, body=tampered))[1] == "InvalidSignatureException"
    assert service.calls == []


def test_target_altered_after_signing(app, service):
    body = json.dumps({"CollectionId": "c"}).encode()
    headers = [(k, "RekognitionService.CreateCollection" if k.lower() == "x-amz-target" else v)
               for k, v in sign(body, "RekognitionService.DescribeCollection")]
    assert _error(call(app, headers=headers, body=body))[1] == "InvalidSignatureException"
    assert service.calls == []


def test_auth_is_checked_before_the_operation(app, service):
    """An unsigned request for an unknown operation is an authentication error first."""
    result = call(app, headers=[("host", HOST), ("x-amz-target", "RekognitionService.Nope")], body=b"{}")
    assert _error(result)[1] == "MissingAuthenticationTokenException"


def test_unknown_and_missing_target(app, service):
    assert _error(post(app, b"{}", "RekognitionService.DoesNotExist"))[:2] == (
        400, "UnknownOperationException")
    assert _error(post(app, b"{}", "SomeOtherService.DetectFaces"))[1] == "UnknownOperationException"
    assert _error(post(app, b"{}", None))[1] == "UnknownOperationException"
    assert service.calls == []


def test_other_paths_and_methods(app, service):
    body = json.dumps(detect_payload()).encode()
    assert _error(call(app, path="/2016-06-27/faces", headers=sign(body, path="/2016-06-27/faces"),
                       body=body))[1] == "UnknownOperationException"
    assert service.calls == []


def test_operation_in_model_but_not_in_service(app, service):
    status, code, message = _error(post(app, {"ProjectName": "p"}, "RekognitionService.CreateProject"))
    assert (status, code) == (400, "InvalidParameterException")
    assert message == "Operation CreateProject is not supported by faceaudit"
    assert service.calls == []


def test_malformed_json(app, service):
    status, code, _ = _error(post(app, b'{"Image": {"Bytes": '))
    assert (status, code) == (400, "SerializationException")
    assert _error(post(app, b"[1, 2]"))[1] == "SerializationException"
    assert _error(post(app, b"\xff\xfe"))[1] == "SerializationException"
    assert service.calls == []


def test_validation_error(app, service):
    payload = {"SourceImage": {"Bytes": "AAAA"}, "TargetImage": {"Bytes": "AAAA"},
               "SimilarityThreshold": 150}
    status, code, message = _error(post(app, payload, "RekognitionService.CompareFaces"))
    assert (status, code) == (400, "InvalidParameterException")
    assert message == ("1 validation error detected: Value '150' at 'similarityThreshold' failed to "
                       "satisfy constraint: Member must have value less than or equal to 100")
    assert service.calls == []


def test_image_over_5_mb(app, service):
    payload = {"Image": {"Bytes": base64.b64encode(b"\0" * (5 * 2 ** 20 + 1)).decode()}}
    status, code, _ = _error(post(app, payload))
    assert (status, code) == (400, "ImageTooLargeException")
    assert service.calls == []


def test_declared_body_over_the_limit_is_refused_unread(app, service):
    headers = sign(b"{}")
    headers = [(k, str(MAX_BODY_BYTES + 1) if k == "content-length" else v) for k, v in headers]
    status, out_headers, _, parsed, received = call(app, headers=headers, body=b"{}")
    assert (status, parsed["__type"]) == (400, "ImageTooLargeException")
    assert received == 0  # not one chunk of the body was read
    assert out_headers["connection"] == "close"
    assert service.calls == []


def test_streamed_body_over_the_limit_is_cut_off(app, service):
    body = b"x" * (MAX_BODY_BYTES + 10)
    headers = [(k, v) for k, v in sign(b"{}") if k != "content-length"]  # chunked: no length
    status, _, _, parsed, received = call(app, headers=headers, body=body, chunk=2 ** 20)
    assert (status, parsed["__type"]) == (400, "ImageTooLargeException")
    assert received == 17  # stopped at the first chunk past 16 MiB
    assert service.calls == []


# ------------------------------------------------------------------------ service answers


def test_service_error_is_answered_under_its_name(app, service):
    service.answers["DetectFaces"] = InvalidImageFormatException("Image format not recognized")
    result = post(app, detect_payload())
    assert _error(result) == (400, "InvalidImageFormatException", "Image format not recognized")
    # Rekognition's own errors carry Code and Message, as Rekognition writes them
    assert result[3] == {"__type": "InvalidImageFormatException", "Code": "InvalidImageFormatException",
                         "Message": "Image format not recognized"}
    assert len(service.calls) == 1


def test_not_found(app, service):
    service.answers["CreateCollection"] = ResourceNotFoundException("nope")
    assert _error(post(app, {"CollectionId": "c"}, "RekognitionService.CreateCollection"))[:2] == (
        400, "ResourceNotFoundException")


def test_bug_in_the_service_is_an_internal_error_without_details(app, service, caplog):
    service.answers["DetectFaces"] = RuntimeError("secret internals")
    status, code, message = _error(post(app, detect_payload()))
    assert (status, code, message) == (500, "InternalServerError", "Internal server error")
    assert "secret internals" in caplog.text  # logged for the operator, not sent to the client


def test_response_types_are_encoded(app, service):
    import numpy as np
    service.answers["CreateCollection"] = {
        "CollectionArn": "arn:x", "StatusCode": np.int64(200),
        "FaceModelVersion": "faceaudit-1", "Extra": {"When": datetime(2024, 1, 2, tzinfo=UTC),
                                                      "Raw": b"\x01\x02", "Score": np.float32(0.5)},
    }
    status, _, _, parsed, _ = post(app, {"CollectionId": "c"}, "RekognitionService.CreateCollection")
    assert status == 200
    assert parsed == {"CollectionArn": "arn:x", "StatusCode": 200, "FaceModelVersion": "faceaudit-1",
                      "Extra": {"When": 1704153600, "Raw": "AQI=", "Score": 0.5}}


def test_shutdown_waits_and_runs_hooks(app):
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.closed == [True]
    app.close()  # idempotent
    assert app.closed == [True]


# ------------------------------------------------------------------------ keys and roles


@pytest.fixture
def keyed(service, tmp_path):
    """An app whose keys come from a key store, as `faceaudit serve` builds it."""
    store = SQLiteKeyStore(tmp_path)
    application = RekognitionApp(service, StoreKeys(store), threads=2)
    yield application, store
    application.close()
    store.close()


def _pair(issued) -> sigv4.Credentials:
    return sigv4.Credentials(issued.key.access_key_id, issued.secret_access_key)


def test_a_role_that_may_not_call_the_operation_never_reaches_the_service(keyed, service):
    app, store = keyed
    auditor = _pair(store.create("audrey", "auditor"))
    status, code, message = _error(post(app, detect_payload(), key=auditor))
    assert (status, code) == (400, "AccessDeniedException")
    assert "'audrey' (role auditor)" in message and "rekognition:DetectFaces" in message
    assert service.calls == []
    operator = _pair(store.create("otto", "operator"))
    assert post(app, detect_payload(), key=operator)[0] == 200
    assert [op for op, _ in service.calls] == ["DetectFaces"]


def test_a_revoked_key_is_refused_before_its_body_is_read(keyed, service):
    app, store = keyed
    operator = _pair(store.create("otto", "operator"))
    assert post(app, detect_payload(), key=operator)[0] == 200
    store.revoke("otto")
    body = json.dumps(detect_payload()).encode()
    result = call(app, headers=sign(body, key=operator), body=body)
    assert _error(result)[:2] == (400, "UnrecognizedClientException")
    assert result[4] == 0  # not one chunk of the body was read
    assert len(service.calls) == 1


def test_an_unreadable_key_store_fails_closed_without_details(service, caplog):
    class Broken:
        def lookup(self, access_key_id):
            raise KeyStoreUnavailable("/secret/path/access.db could not be read: disk I/O error")

    app = RekognitionApp(service, StoreKeys(Broken()), threads=1)  # type: ignore[arg-type]
    try:
        result = post(app, detect_payload())
    finally:
        app.close()
    status, code, message = _error(result)
    assert (status, code, message) == (500, "InternalServerError", "Internal server error")
    assert result[4] == 0 and service.calls == []
    assert "disk I/O error" in caplog.text


# ----------------------------------------------------------------------- the accountability guard


def test_the_guard_gets_only_the_signed_headers_and_its_facts_stay_on_the_outcome(tmp_path):
    from faceaudit.accountability.guard import GuardedService
    from faceaudit.accountability.state import AccountabilityState
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.storage import EmbeddedStore

    store, state = EmbeddedStore(tmp_path), AccountabilityState(tmp_path)
    store.create_collection("c", "1.0")
    application = RekognitionApp(GuardedService(RekognitionService(None, store), state),  # type: ignore[arg-type]
                                 KEY, threads=1, on_shutdown=[store.close, state.close])
    body = json.dumps({"ResourceArn": store.describe_collection("c").arn}).encode()
    headers = sign(body, "RekognitionService.ListTagsForResource", extra={"X-Faceaudit-Purpose": "a signed purpose"})
    headers.append(("X-Faceaudit-Case", "added after signing"))  # not covered by the signature
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    try:
        outcome = application.handle("POST", "/", "", raw, body, "request-1")
    finally:
        application.close()
    assert outcome.status == 200 and json.loads(outcome.body) == {"Tags": {}}
    facts = outcome.facts
    assert facts is not None and (facts.operation, facts.collection) == ("ListTagsForResource", "c")
    assert (facts.purpose, facts.case) == ("a signed purpose", None)
# ----------------------------------------------------------------- faceaudit's own operations


class FakeReview:
    """A CallerService recording who asked."""

    operations = frozenset({"ListReviewItems"})

    def __init__(self):
        self.calls: list[tuple[object, str, dict]] = []

    def call(self, caller, operation, request, facts=None):
        self.calls.append((caller, operation, request))
        return {"ReviewItems": []}


def test_faceaudit_operations_reach_the_second_service_with_the_signed_headers_only(service, tmp_path):
    review = FakeReview()
    keys = SQLiteKeyStore(tmp_path / "data")
    issued = keys.create("rev", "reviewer")
    reviewer = sigv4.Credentials(issued.key.access_key_id, issued.secret_access_key)
    application = RekognitionApp(service, StoreKeys(keys), threads=2, faceaudit=review, on_shutdown=[keys.close])
    try:
        body = json.dumps({"MaxResults": 5}).encode()
        headers = sign(body, "FaceAuditService.ListReviewItems", key=reviewer,
                       extra={"X-Faceaudit-Purpose": "missing person"})
        status, _, _, parsed, _ = call(application, headers=[*headers, ("x-faceaudit-case", "unsigned")],
                                       body=body)
        assert (status, parsed) == (200, {"ReviewItems": []})
        ((caller, operation, request),) = review.calls
        assert (operation, request, caller.key.name) == ("ListReviewItems", {"MaxResults": 5}, "rev")
        assert caller.purpose == "missing person" and caller.case is None  # an unsigned header counts for nothing
        assert service.calls == []
        status, code, _ = _error(post(application, {"ItemId": "0" * 36}, "FaceAuditService.GetReviewResult",
                                      key=reviewer))
        assert (status, code) == (400, "InvalidParameterException")  # in the model, not in this service
    finally:
        application.close()


def test_without_a_review_service_faceaudit_operations_are_refused(app, service):
    status, code, message = _error(post(app, {}, "FaceAuditService.ListReviewItems"))
    assert (status, code, message) == (400, "InvalidParameterException",
                                       "Operation ListReviewItems is not supported by faceaudit")
    assert service.calls == []
