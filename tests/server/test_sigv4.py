"""Server-side SigV4 verification against AWS's published test suite and botocore.

The suite (awslabs/aws-c-auth tests/aws-signing-test-suite/v4, 38 cases) lives
outside the repository, in ../shared/data/sigv4-test-suite, or wherever
FACEAUDIT_SIGV4_SUITE points.  Each case folder holds context.json, request.txt,
header-/query-canonical-request.txt, -string-to-sign.txt, -signature.txt and
-signed-request.txt.  Every case is checked twice: signed with an Authorization
header and presigned in the query string.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from faceaudit.errors import RekognitionError
from faceaudit.server import sigv4
from faceaudit.server.sigv4 import (
    Credentials,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
    verify_request,
)

# ----------------------------------------------------------------------- the suite

EXPECTED_CASES = 38  # per the suite's SOURCE.md


def _suite_dir() -> Path:
    env = os.environ.get("FACEAUDIT_SIGV4_SUITE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sigv4-test-suite"


SUITE = _suite_dir()
CASE_NAMES = sorted(p.name for p in SUITE.iterdir() if (p / "context.json").is_file()) if SUITE.is_dir() else []


def _require_suite() -> None:
    if CASE_NAMES:
        return
    reason = f"AWS SigV4 test suite not found at {SUITE} (set FACEAUDIT_SIGV4_SUITE to its folder)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# Cases (case, variant) that cannot be verified by any server, with the reason.
INAPPLICABLE = {
    ("post-sts-header-after", "query"): (
        "the client appended X-Amz-Security-Token to the URL *after* signing "
        "(context.json omit_session_token=true, an IoT-style convention), so the "
        "expected canonical query omits a parameter the request carries; SigV4 "
        "signs every query parameter but X-Amz-Signature, and a verifier cannot "
        "guess which ones a client chose to leave out"
    ),
}

VARIANTS = ("header", "query")
SUITE_PARAMS = (
    [
        pytest.param(
            (name, variant),
            id=f"{name}[{variant}]",
            marks=[pytest.mark.skip(reason=INAPPLICABLE[(name, variant)])]
            if (name, variant) in INAPPLICABLE
            else [],
        )
        for name in CASE_NAMES
        for variant in VARIANTS
    ]
    or [pytest.param((None, None), id="suite-missing")]
)


@dataclass
class RawRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return values[-1] if values else None


def parse_http(data: bytes) -> RawRequest:
    """Parse the suite's request files.

    The request target may contain raw spaces and UTF-8 (``GET /example space/
    HTTP/1.1``), so the method is the first word and the version the last.
    Lines that start with whitespace continue the previous header (obs-fold).
    """
    text = data.decode("utf-8")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rsplit(" ", 1)[0]
    path, _, query = target.partition("?")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
            continue
        name, _, value = line.partition(":")
        headers.append((name, value))
    return RawRequest(method, path, query, headers, body.encode("utf-8"))


@dataclass
class Case:
    name: str
    variant: str
    context: dict
    request: RawRequest
    creq: str
    sts: str
    signature: str

    @property
    def credentials(self) -> Credentials:
        c = self.context["credentials"]
        return Credentials(c["access_key_id"], c["secret_access_key"])

    @property
    def now(self) -> datetime:
        return datetime.strptime(self.context["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC
        )

    def verify(self, request: RawRequest | None = None, credentials=None, **kw):
        r = request or self.request
        options = {"service": self.context["service"], "now": self.now, "normalize_path": self.context["normalize"]}
        options.update(kw)
        return verify_request(
            r.method, r.path, r.query, r.headers, r.body, credentials or self.credentials, **options
        )


def load_case(name: str, variant: str) -> Case:
    folder = SUITE / name
    read = lambda suffix: (folder / f"{variant}-{suffix}").read_bytes().decode("utf-8")  # noqa: E731
    return Case(
        name=name,
        variant=variant,
        context=json.loads((folder / "context.json").read_text()),
        request=parse_http((folder / f"{variant}-signed-request.txt").read_bytes()),
        creq=read("canonical-request.txt"),
        sts=read("string-to-sign.txt"),
        signature=read("signature.txt").strip(),
    )


@pytest.fixture
def case(request) -> Case:
    name, variant = request.param
    _require_suite()
    return load_case(name, variant)


def _params_of(case: Case) -> tuple[str, str, list[str], str]:
    """(credential, amz_date, signed header names, signature) from the signed request."""
    r = case.request
    if case.variant == "header":
        authz = r.header("authorization")
        fields = dict(p.strip().split("=", 1) for p in authz.split(" ", 1)[1].split(","))
        return fields["Credential"], r.header("x-amz-date"), fields["SignedHeaders"].split(";"), fields["Signature"]
    from urllib.parse import parse_qs

    q = {k: v[0] for k, v in parse_qs(r.query).items()}
    return q["X-Amz-Credential"], q["X-Amz-Date"], q["X-Amz-SignedHeaders"].split(";"), q["X-Amz-Signature"]


def test_suite_is_complete():
    _require_suite()
    assert len(CASE_NAMES) == EXPECTED_CASES, CASE_NAMES
    for name in CASE_NAMES:
        for variant in VARIANTS:
            for suffix in ("canonical-request", "string-to-sign", "signature", "signed-request"):
                assert (SUITE / name / f"{variant}-{suffix}.txt").is_file(), (name, variant, suffix)


@pytest.mark.parametrize("case", SUITE_PARAMS, indirect=True)
def test_suite_canonical_request_and_string_to_sign(case: Case):
    credential, amz_date, signed_headers, signature = _params_of(case)
    r = case.request
    declared = r.header("x-amz-content-sha256")
    payload_hash = declared if declared is not None else hashlib.sha256(r.body).hexdigest()
    creq = sigv4.canonical_request(
        r.method,
        r.path,
        r.query,
        r.headers,
        signed_headers,
        payload_hash,
        normalize_path=case.context["normalize"],
        exclude_query=("X-Amz-Signature",) if case.variant == "query" else (),
    )
    assert creq == case.creq
    scope = credential.split("/", 1)[1]
    assert sigv4.string_to_sign(amz_date, scope, creq) == case.sts
    assert signature == case.signature


@pytest.mark.parametrize("case", SUITE_PARAMS, indirect=True)
def test_suite_signed_request_is_accepted(case: Case):
    verified = case.verify()
    assert verified.access_key_id == "AKIDEXAMPLE"
    assert verified.region == case.context["region"]
    assert verified.service == case.context["service"]
    assert verified.date == case.now
    assert verified.presigned == (case.variant == "query")
    # Also accepted up to the skew limit either side, and with credentials looked up by id.
    assert case.verify(now=case.now + timedelta(minutes=15), credentials={"AKIDEXAMPLE": case.credentials})
    assert case.verify(now=case.now - timedelta(minutes=15))


def _mutations(case: Case):
    """Yield (label, altered request) pairs, each of which must fail verification."""
    r = case.request

    def altered(**changes) -> RawRequest:
        return RawRequest(**{**r.__dict__, **changes})

    body = bytes([r.body[0] ^ 0x01]) + r.body[1:] if r.body else b"x"
    yield "body byte", altered(body=body)
    yield "path", altered(path=r.path + "x")
    yield "query", altered(query=r.query + ("&" if r.query else "") + "Extra=1")
    yield "method", altered(method="PUT" if r.method != "PUT" else "GET")

    _, _, signed, signature = _params_of(case)
    for name in signed:
        if name == "x-amz-date":
            continue  # changed below with a value that still parses
        last = max(i for i, (k, _) in enumerate(r.headers) if k.lower() == name)
        headers = list(r.headers)
        headers[last] = (headers[last][0], headers[last][1] + "x")
        yield f"header {name}", altered(headers=headers)

    later = (case.now + timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    if case.variant == "header":
        headers = [(k, later if k.lower() == "x-amz-date" else v) for k, v in r.headers]
        yield "header x-amz-date", altered(headers=headers)
        wrong = "0" if signature[0] != "0" else "1"
        headers = [
            (k, v.replace(f"Signature={signature}", f"Signature={wrong}{signature[1:]}"))
            for k, v in r.headers
        ]
        yield "signature", altered(headers=headers)
    else:
        yield "X-Amz-Date", altered(query=r.query.replace(case.now.strftime("%Y%m%dT%H%M%SZ"), later))
        yield "X-Amz-Expires", altered(query=r.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=3601"))
        yield "signature", altered(query=r.query.replace(signature, signature[::-1]))


@pytest.mark.parametrize("case", SUITE_PARAMS, indirect=True)
def test_suite_altered_requests_are_rejected(case: Case):
    for label, request in _mutations(case):
        try:
            case.verify(request)
        except InvalidSignatureException:
            continue
        except Exception as error:  # any other error: report which mutation
            pytest.fail(f"altered {label}: raised {error!r}, not InvalidSignatureException")
        pytest.fail(f"accepted with altered {label}")
    with pytest.raises(InvalidSignatureException, match="signature we calculated does not match"):
        case.verify(credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ"))


@pytest.mark.parametrize("case", SUITE_PARAMS, indirect=True)
def test_suite_clock_skew_and_scope(case: Case):
    # Header auth allows 15 minutes of skew; the suite's presigned URLs last X-Amz-Expires=3600 s.
    lifetime = timedelta(minutes=15) if case.variant == "header" else timedelta(seconds=3600)
    with pytest.raises(InvalidSignatureException, match=r"^Signature expired: "):
        case.verify(now=case.now + lifetime + timedelta(seconds=1))
    with pytest.raises(InvalidSignatureException, match=r"^Signature not yet current: "):
        case.verify(now=case.now - timedelta(minutes=15, seconds=1))
    with pytest.raises(InvalidSignatureException, match="scoped to correct service: 'rekognition'"):
        case.verify(service="rekognition")
    with pytest.raises(InvalidSignatureException, match="valid region, not 'us-east-1'"):
        case.verify(region="eu-west-1")
    with pytest.raises(UnrecognizedClientException):
        case.verify(credentials=Credentials("AKIDOTHER", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"))


def test_suite_expired_presigned_url_message():
    _require_suite()
    case = load_case("get-vanilla", "query")
    with pytest.raises(InvalidSignatureException) as info:
        case.verify(now=case.now + timedelta(seconds=3601))
    assert str(info.value) == (
        "Signature expired: 20150830T133600Z is now earlier than 20150830T133601Z "
        "(20150830T123600Z + X-Amz-Expires 3600 sec.)"
    )
    assert case.verify(now=case.now + timedelta(seconds=3600))


# ------------------------------------------------------- requests signed by botocore

try:
    from botocore.auth import SigV4Auth, SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials
except ImportError:  # not a dependency of faceaudit; the suite tests above still run
    SigV4Auth = None

needs_botocore = pytest.mark.skipif(
    SigV4Auth is None, reason="botocore is not installed (needed to sign requests as boto3 does)"
)

KEY = Credentials("AKIAFACEAUDITTEST", "faceaudit/secret+key=")
ENDPOINT_HOST = "127.0.0.1:8000"
BODY = json.dumps({"Image": {"Bytes": "aGVsbG8="}, "Attributes": ["DEFAULT"]}).encode()


@dataclass
class Signed:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    when: datetime

    def verify(self, credentials=KEY, *, headers=None, body=None, now=None, **kw):
        return verify_request(
            self.method,
            self.path,
            self.query,
            self.headers if headers is None else headers,
            self.body if body is None else body,
            credentials,
            now=now or self.when,
            **kw,
        )

    def without(self, name: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if k.lower() != name.lower()]

    def replaced(self, name: str, value: str) -> list[tuple[str, str]]:
        return self.without(name) + [(name, value)]


def botocore_sign(
    body: bytes = BODY, secret: str = KEY.secret_access_key, key_id: str = KEY.access_key_id
) -> Signed:
    request = AWSRequest(
        method="POST",
        url=f"http://{ENDPOINT_HOST}/",
        data=body,
        headers={
            "X-Amz-Target": "RekognitionService.DetectFaces",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(BotoCredentials(key_id, secret), "rekognition", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in prepared.headers.items()]
    headers.append(("Host", ENDPOINT_HOST))  # added by the HTTP client when it sends the request
    when = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return Signed("POST", "/", "", headers, prepared.body, when)


@pytest.fixture
def signed() -> Signed:
    return botocore_sign()


@needs_botocore
def test_botocore_signed_rekognition_request_is_accepted(signed: Signed):
    verified = signed.verify()
    assert verified.access_key_id == KEY.access_key_id
    assert verified.region == "us-east-1"
    assert verified.service == "rekognition"
    assert set(verified.signed_headers) >= {"host", "x-amz-date", "x-amz-target", "content-type"}
    assert not verified.presigned
    # The clock defaults to now: a fresh signature verifies without passing `now`.
    assert verify_request(signed.method, signed.path, signed.query, signed.headers, signed.body, KEY)
    # Header names are case-insensitive, and a Mapping works as well as pairs.
    assert signed.verify(headers={k.lower(): v for k, v in signed.headers})
    assert signed.verify({KEY.access_key_id: KEY, "AKIAOTHER": Credentials("AKIAOTHER", "x")})


@needs_botocore
def test_our_canonical_request_matches_botocores(signed: Signed):
    authz = _authorization(signed)
    signed_headers = authz.split("SignedHeaders=")[1].split(",")[0].split(";")
    # Rebuild the request botocore signed: just the headers it chose to sign.
    headers = {k: v for k, v in signed.headers if k.lower() in signed_headers}
    request = AWSRequest(method="POST", url=f"http://{ENDPOINT_HOST}/", data=signed.body, headers=headers)
    request.context["timestamp"] = signed.when.strftime("%Y%m%dT%H%M%SZ")
    auth = SigV4Auth(BotoCredentials(KEY.access_key_id, KEY.secret_access_key), "rekognition", "us-east-1")
    theirs = auth.canonical_request(request)
    ours = sigv4.canonical_request(
        "POST", "/", "", signed.headers, signed_headers, hashlib.sha256(signed.body).hexdigest()
    )
    assert ours == theirs


@needs_botocore
def test_expired_signature(signed: Signed):
    with pytest.raises(InvalidSignatureException) as info:
        signed.verify(now=signed.when + timedelta(minutes=20))
    now = signed.when + timedelta(minutes=20)
    fmt = lambda d: d.strftime("%Y%m%dT%H%M%SZ")  # noqa: E731
    assert str(info.value) == (
        f"Signature expired: {fmt(signed.when)} is now earlier than "
        f"{fmt(now - timedelta(minutes=15))} ({fmt(now)} - 15 min.)"
    )
    assert info.value.code == "InvalidSignatureException" and info.value.http_status == 400


@needs_botocore
def test_signature_from_the_future(signed: Signed):
    with pytest.raises(InvalidSignatureException, match=r"^Signature not yet current: .* \+ 5 min\.\)$"):
        signed.verify(now=signed.when - timedelta(minutes=6), max_clock_skew=timedelta(minutes=5))


@needs_botocore
def test_unsigned_request(signed: Signed):
    with pytest.raises(MissingAuthenticationTokenException) as info:
        signed.verify(headers=signed.without("authorization"))
    assert str(info.value) == "Request is missing Authentication Token"
    assert info.value.code == "MissingAuthenticationTokenException" and info.value.http_status == 400


@needs_botocore
def test_unknown_access_key(signed: Signed):
    with pytest.raises(UnrecognizedClientException) as info:
        signed.verify(Credentials("AKIASOMEONEELSE", KEY.secret_access_key))
    assert str(info.value) == "The security token included in the request is invalid."
    assert info.value.code == "UnrecognizedClientException" and info.value.http_status == 400
    with pytest.raises(UnrecognizedClientException):
        signed.verify({"AKIASOMEONEELSE": KEY})


@needs_botocore
def test_wrong_secret():
    signed = botocore_sign(secret="not-the-secret")
    with pytest.raises(InvalidSignatureException) as info:
        signed.verify()
    assert str(info.value).startswith(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method."
    )


@needs_botocore
def test_altered_body_and_target(signed: Signed):
    with pytest.raises(InvalidSignatureException, match="does not match"):
        signed.verify(body=signed.body.replace(b"DEFAULT", b"ALL"))
    with pytest.raises(InvalidSignatureException, match="does not match"):
        signed.verify(headers=signed.replaced("X-Amz-Target", "RekognitionService.DeleteCollection"))
    with pytest.raises(InvalidSignatureException, match="does not match"):
        signed.verify(headers=signed.replaced("Host", "127.0.0.1:8001"))


def _authorization(signed: Signed) -> str:
    return next(v for k, v in signed.headers if k.lower() == "authorization")


@needs_botocore
@pytest.mark.parametrize(
    "mangle, error, message",
    [
        (lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"), IncompleteSignatureException,
         "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'"),
        (lambda a: "AWS AKIAFACEAUDITTEST:c2lnbmF0dXJl", IncompleteSignatureException, "Unsupported AWS 'algorithm'"),
        (lambda a: a.split(", Signature=")[0], IncompleteSignatureException,
         "^Authorization header requires 'Signature' parameter. Authorization="),
        (lambda a: a.replace("SignedHeaders=", "Headers="), IncompleteSignatureException,
         "^Authorization header requires 'SignedHeaders' parameter."),
        (lambda a: a.replace("Credential=", "Credential "), IncompleteSignatureException,
         "not a valid key=value pair \\(missing equal-sign\\) in Authorization header"),
        (lambda a: "AWS4-HMAC-SHA256 ", IncompleteSignatureException,
         "requires 'Credential' parameter. .*requires 'Signature' parameter. .*requires 'SignedHeaders' parameter."),
        (lambda a: a.replace("/us-east-1/", "/"), IncompleteSignatureException, "exactly 5 slash-delimited elements"),
        (lambda a: a.replace("/aws4_request", "/aws5_request"), InvalidSignatureException,
         "valid terminator: 'aws4_request', not 'aws5_request'"),
        (lambda a: a.replace("/rekognition/", "/s3/"), InvalidSignatureException,
         "scoped to correct service: 'rekognition'"),
        (lambda a: a.replace("Credential=AKIAFACEAUDITTEST/2", "Credential=AKIAFACEAUDITTEST/1"),
         InvalidSignatureException, "Date in Credential scope does not match"),
        (lambda a: a.replace("Signature=", "Signature=é"), InvalidSignatureException, "does not match"),
    ],
    ids=["algorithm", "sigv2", "no-signature", "no-signed-headers", "no-equals", "empty", "short-scope",
         "terminator", "service", "scope-date", "non-ascii-signature"],
)
def test_malformed_authorization_header(signed: Signed, mangle, error, message):
    with pytest.raises(error, match=message) as info:
        signed.verify(headers=signed.replaced("Authorization", mangle(_authorization(signed))))
    assert isinstance(info.value, RekognitionError) and info.value.http_status == 400


@needs_botocore
def test_host_and_date_must_be_signed(signed: Signed):
    authz = _authorization(signed)
    unsigned_host = authz.replace("content-type;host;", "content-type;")
    assert unsigned_host != authz
    with pytest.raises(InvalidSignatureException, match="'Host' or ':authority' must be a 'SignedHeader'"):
        signed.verify(headers=signed.replaced("Authorization", unsigned_host))
    unsigned_date = authz.replace(";x-amz-date;", ";")
    assert unsigned_date != authz
    with pytest.raises(InvalidSignatureException, match="'X-Amz-Date' must be a 'SignedHeader'"):
        signed.verify(headers=signed.replaced("Authorization", unsigned_date))


@needs_botocore
def test_missing_or_malformed_date(signed: Signed):
    with pytest.raises(IncompleteSignatureException, match="requires existence of either a 'X-Amz-Date' or a 'Date'"):
        signed.verify(headers=signed.without("x-amz-date"))
    with pytest.raises(IncompleteSignatureException, match="ISO-8601 'basic format'"):
        signed.verify(headers=signed.replaced("X-Amz-Date", "2015-08-30T12:36:00Z"))


@needs_botocore
def test_signed_header_absent_from_request(signed: Signed):
    with pytest.raises(InvalidSignatureException, match="'x-amz-target' is listed in SignedHeaders but is not present"):
        signed.verify(headers=signed.without("x-amz-target"))


@needs_botocore
def test_duplicate_or_conflicting_authorization(signed: Signed):
    with pytest.raises(IncompleteSignatureException, match="more than one Authorization"):
        signed.verify(headers=signed.headers + [("Authorization", _authorization(signed))])
    with pytest.raises(IncompleteSignatureException, match="Only one auth mechanism"):
        verify_request(
            "POST", "/", "X-Amz-Algorithm=AWS4-HMAC-SHA256", signed.headers, signed.body, KEY, now=signed.when
        )


@needs_botocore
def test_x_amz_content_sha256(signed: Signed):
    body_hash = hashlib.sha256(BODY).hexdigest()
    # A client that declares the body hash (signed or not) is checked against the body.
    declared = botocore_sign_with_header(body_hash)
    assert declared.verify()
    with pytest.raises(InvalidSignatureException, match="'x-amz-content-sha256' header does not match"):
        declared.verify(body=BODY + b" ")
    # UNSIGNED-PAYLOAD, when the client signed with it, leaves the body unchecked.
    unsigned = botocore_sign_with_header("UNSIGNED-PAYLOAD")
    assert unsigned.verify(body=b'{"anything": 1}')
    # Adding the header to a request signed over its body breaks the signature.
    with pytest.raises(InvalidSignatureException, match="signature we calculated"):
        signed.verify(headers=signed.headers + [("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")])


def botocore_sign_with_header(value: str) -> Signed:
    request = AWSRequest(
        method="POST",
        url=f"http://{ENDPOINT_HOST}/",
        data=BODY,
        headers={
            "X-Amz-Target": "RekognitionService.DetectFaces",
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Content-SHA256": value,
        },
    )
    SigV4Auth(BotoCredentials(KEY.access_key_id, KEY.secret_access_key), "rekognition", "us-east-1").add_auth(
        request
    )
    prepared = request.prepare()
    headers = [(k, v) for k, v in prepared.headers.items()] + [("Host", ENDPOINT_HOST)]
    when = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return Signed("POST", "/", "", headers, prepared.body, when)


@needs_botocore
def test_date_header_instead_of_x_amz_date():
    # botocore signs with the Date header (and drops X-Amz-Date) when a Date header is present.
    request = AWSRequest(
        method="POST",
        url=f"http://{ENDPOINT_HOST}/",
        data=BODY,
        headers={"X-Amz-Target": "RekognitionService.DetectFaces", "Date": "Sun, 30 Aug 2015 12:36:00 GMT"},
    )
    SigV4Auth(BotoCredentials(KEY.access_key_id, KEY.secret_access_key), "rekognition", "us-east-1").add_auth(
        request
    )
    prepared = request.prepare()
    headers = list(prepared.headers.items()) + [("Host", ENDPOINT_HOST)]
    assert not any(k.lower() == "x-amz-date" for k, _ in headers)
    when = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    verified = verify_request("POST", "/", "", headers, prepared.body, KEY, now=when)
    assert "date" in verified.signed_headers and verified.date == when


@needs_botocore
def test_botocore_presigned_url():
    from urllib.parse import urlsplit

    request = AWSRequest(method="GET", url=f"http://{ENDPOINT_HOST}/?Action=Describe", headers={})
    SigV4QueryAuth(BotoCredentials(KEY.access_key_id, KEY.secret_access_key), "rekognition", "us-east-1", 60).add_auth(
        request
    )
    url = urlsplit(request.url)
    when = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    headers = [("Host", ENDPOINT_HOST)]
    verified = verify_request("GET", url.path, url.query, headers, b"", KEY, now=when + timedelta(seconds=60))
    assert verified.presigned
    with pytest.raises(InvalidSignatureException, match=r"^Signature expired"):
        verify_request("GET", url.path, url.query, headers, b"", KEY, now=when + timedelta(seconds=61))


def test_credentials_repr_hides_secret():
    assert "secret" not in repr(KEY) and KEY.access_key_id in repr(KEY)


# ------------------------------------------- an unmodified boto3 client, end to end


class _Handler(BaseHTTPRequestHandler):
    """How an HTTP server wires verify_request in: raw target, raw headers, raw body."""

    credentials: Credentials

    def do_POST(self):  # http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path, _, query = self.path.partition("?")  # self.path is the raw request target
        try:
            verify_request("POST", path, query, self.headers.items(), body, self.credentials)
            status, payload = 200, {"FaceDetails": []}
        except RekognitionError as error:
            status, payload = error.http_status, {"__type": error.code, "message": error.message}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def endpoint():
    handler = type("Handler", (_Handler,), {"credentials": KEY})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@needs_botocore
def test_boto3_client_end_to_end(endpoint, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config
    from botocore.exceptions import ClientError

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def client(key_id: str, secret: str):
        session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1")
        return session.client("rekognition", endpoint_url=endpoint, config=Config(retries={"max_attempts": 1}))

    good = client(KEY.access_key_id, KEY.secret_access_key)
    assert good.detect_faces(Image={"Bytes": b"\x89PNG"})["FaceDetails"] == []

    for key_id, secret, code in [
        (KEY.access_key_id, "wrong", "InvalidSignatureException"),
        ("AKIAUNKNOWN", KEY.secret_access_key, "UnrecognizedClientException"),
    ]:
        with pytest.raises(ClientError) as info:
            client(key_id, secret).detect_faces(Image={"Bytes": b"\x89PNG"})
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
