"""The app's signing policy at the sigv4 layer (in process): stricter than SigV4, and optional.

Without a policy ``verify_request`` keeps exactly SigV4's rules (AWS's suite,
test_sigv4.py); the app passes ``app.SIGNING_POLICY``.  The same checks over
the wire are in test_hardening.py.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from faceaudit.errors import InternalServerError
from faceaudit.server import sigv4
from faceaudit.server.app import SIGNING_POLICY, is_storage_full

KEY = sigv4.Credentials("AKIDPOLICYTEST000001", "policy-test-secret-000000000000000000000")
HOST = "127.0.0.1:8000"


class _Signing(SigV4Auth):
    def __init__(self, only: tuple[str, ...] | None):
        super().__init__(BotoCredentials(KEY.access_key_id, KEY.secret_access_key),
                         "rekognition", "us-east-1")
        self.only = only

    def headers_to_sign(self, request):
        signed = super().headers_to_sign(request)
        if self.only is not None:
            for name in list(signed.keys()):
                if name.lower() not in self.only:
                    del signed[name]
        return signed


def _request(only: tuple[str, ...] | None = None, extra: dict[str, str] | None = None,
             body: bytes = b"{}") -> list[tuple[str, str]]:
    headers = {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "RekognitionService.ListCollections", **(extra or {})}
    request = AWSRequest(method="POST", url=f"http://{HOST}/", data=body, headers=headers)
    _Signing(only).add_auth(request)
    return [("host", HOST), *request.headers.items()]


def _verify(headers, policy, body: bytes = b"{}"):
    return sigv4.verify_request("POST", "/", "", headers, body, KEY, policy=policy,
                                now=datetime.now(UTC))


def test_what_boto3_signs_meets_the_policy():
    assert _verify(_request(), SIGNING_POLICY).access_key_id == KEY.access_key_id


def test_sigv4_alone_accepts_what_the_policy_refuses():
    headers = _request(only=("host", "x-amz-date"))
    assert _verify(headers, None).signed_headers == ("host", "x-amz-date")
    with pytest.raises(sigv4.InvalidSignatureException) as info:
        _verify(headers, SIGNING_POLICY)
    assert info.value.message == ("'Content-Type', 'X-Amz-Target' must be a 'SignedHeader' "
                                  "in the AWS Authorization.")


def test_the_policy_is_checked_before_the_body():
    """preverify raises without a body: the server need not read one."""
    headers = _request(only=("host", "x-amz-date", "content-type"))
    with pytest.raises(sigv4.InvalidSignatureException, match="X-Amz-Target"):
        sigv4.preverify("POST", "/", "", headers, KEY, policy=SIGNING_POLICY)


def test_unsigned_payload_only_without_the_policy():
    headers = _request(extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    with pytest.raises(sigv4.InvalidSignatureException, match="UNSIGNED-PAYLOAD"):
        _verify(headers, SIGNING_POLICY)


def test_storage_full_is_recognised_also_when_wrapped():
    full = sqlite3.OperationalError("database or disk is full")
    assert is_storage_full(full)
    assert is_storage_full(OSError(28, "No space left on device"))
    try:
        try:
            raise full
        except sqlite3.Error as exc:
            raise InternalServerError("store failed") from exc
    except InternalServerError as wrapped:
        assert is_storage_full(wrapped)
    assert not is_storage_full(sqlite3.OperationalError("database is locked"))
    assert not is_storage_full(OSError(13, "Permission denied"))
