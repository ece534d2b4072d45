"""Server-side verification of AWS Signature Version 4 (``AWS4-HMAC-SHA256``).

An unmodified boto3 client signs every request it sends to faceaudit exactly as
it would sign one to Amazon Rekognition; :func:`verify_request` recomputes that
signature from the request *as received* and either returns who signed it or
raises the error Amazon answers with, under Amazon's name.

Framework independent: the caller passes the method, the raw path and raw query
string (percent-encoded, exactly as on the request line), the headers as
received and the body bytes.

Why this module writes the canonical request itself instead of reusing
``botocore.auth.SigV4Auth``: botocore is a *client* signer.  It chooses the
headers to sign from the request (all but a blacklist), takes the query string
verbatim without re-encoding it, reads the timestamp from ``request.context``
and the region and service from its constructor.  A verifier must instead use
exactly the ``SignedHeaders`` list and credential scope the client sent, and
the raw path and query as received.  Bending botocore to that means overriding
most of its methods, several of them private, and would make botocore a run
time dependency of the server.  The canonicalisation is short, so it is written
out below; it is checked against AWS's published SigV4 test suite and against
requests signed by botocore itself (tests/server/test_sigv4.py).

Sources for the error names, HTTP statuses and messages (Rekognition is an
AWS JSON 1.1 "Coral" service; those answer authentication errors with
``<Name>Exception`` and HTTP 400, unlike the XML "Query" services, whose
Common Errors page lists ``MissingAuthenticationToken``/``InvalidClientTokenId``
with 403):

* ``InvalidSignatureException`` 400 from Rekognition itself, "Signature
  expired: ... is now earlier than ... (... - 5 min.)": aws/aws-sdk-php#1780
  (SearchFacesByImage); "Credential should be scoped to correct service":
  aws/aws-sdk-ruby#431, disneystreaming/smithy4s#1568 (JSON 1.1, 400).
* ``UnrecognizedClientException`` 400 "The security token included in the
  request is invalid.": aws/aws-sdk-php#2444 (Cognito, JSON 1.1),
  yegor256/s3auth#244 (DynamoDB).
* ``IncompleteSignatureException`` 400, "Authorization header requires
  'Credential' parameter. ..." and "'...' not a valid key=value pair (missing
  equal-sign) in Authorization header: '...'.": iann0036/cloud9-sync#10
  (JSON 1.1, 400), aws/aws-sdk-js#4285, awslabs/fhir-works-on-aws-deployment#379.
* ``MissingAuthenticationTokenException`` 400 "Request is missing
  Authentication Token": architect/dynalite#105 and
  amazon-archives/aws-dynamodb-session-tomcat#42 (DynamoDB, JSON 1.0, 400).
* "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.":
  aws/aws-sdk-php#2469 (the error name there is not shown; we use
  ``InvalidSignatureException``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

from faceaudit.errors import (  # also re-exported for callers of this module
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

__all__ = [
    "ALGORITHM",
    "CredentialSource",
    "Credentials",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "PendingRequest",
    "SigningPolicy",
    "UnrecognizedClientException",
    "VerifiedRequest",
    "canonical_request",
    "preverify",
    "signing_key",
    "string_to_sign",
    "verify_request",
    "verify_signature",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600  # AWS caps X-Amz-Expires at one week
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


# ---------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class VerifiedRequest:
    """Who signed an accepted request, and for what scope."""

    access_key_id: str
    region: str
    service: str
    date: datetime  # the request's signing time, timezone-aware UTC
    signed_headers: tuple[str, ...]
    presigned: bool = False  # True when authenticated by query parameters


class CredentialSource(Protocol):
    """Where access key ids are looked up: a mapping, or a key store read per request.

    ``get`` may raise a RekognitionError itself (e.g. for a revoked key)."""

    def get(self, access_key_id: str, /) -> Credentials | None: ...


HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]


# ------------------------------------------------------------ canonicalisation


def _uri_encode(data: str | bytes, safe: str = "") -> str:
    """Percent-encode everything but RFC 3986 unreserved characters (and ``safe``).

    ``str`` is encoded as UTF-8 first.  ``quote`` never encodes
    ``A-Z a-z 0-9 - _ . ~`` (Python >= 3.7), which is exactly SigV4's set.
    """
    return quote(data, safe=safe)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal plus collapsing of empty segments.

    Same algorithm as ``botocore.utils.remove_dot_segments`` (what boto3 signs
    with), which also gives what AWS's test suite expects: ``//example//`` ->
    ``/example/``, ``/example/..`` -> ``/``.
    """
    out: list[str] = []
    for seg in path.split("/"):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
        else:
            out.append(seg)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def canonical_uri(raw_path: str, *, normalize: bool = True) -> str:
    """Canonical URI for a non-S3 service.

    ``raw_path`` is the path as on the request line, still percent-encoded.  It
    is normalised and then URI-encoded once more, so ``%20`` on the wire becomes
    ``%2520`` ("double encoding", as botocore and every non-S3 AWS service do).
    ``normalize=False`` gives S3's rule (no dot-segment removal).
    """
    path = raw_path or "/"
    if normalize:
        path = _remove_dot_segments(path) or "/"
    return _uri_encode(path, safe="/")


def _split_query(query_string: str) -> list[tuple[bytes, bytes]]:
    """Decode ``a=1&b=%20`` into raw (name, value) byte pairs; ``+`` stays ``+``."""
    pairs = []
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def canonical_query_string(
    query_string: str, *, exclude: Iterable[str] = ()
) -> str:
    """Decode every parameter, re-encode it strictly, sort by name then value."""
    excluded = {e.encode() for e in exclude}
    encoded = sorted(
        (_uri_encode(name), _uri_encode(value))
        for name, value in _split_query(query_string)
        if name not in excluded
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _header_items(headers: HeadersLike) -> list[tuple[str, str]]:
    """Headers as (name, value) pairs, keeping repeats in order.

    Accepts a list of pairs, a dict, or any multi-dict whose ``items()`` yields
    repeated names (``http.client.HTTPMessage``, werkzeug/starlette Headers).
    Bytes are decoded as ISO-8859-1, which is what HTTP servers hand to Python
    and what makes a botocore-signed non-ASCII value round-trip.
    """
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for name, value in items:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append((str(name), str(value)))
    return out


def _index_headers(headers: HeadersLike) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name, value in _header_items(headers):
        index.setdefault(name.strip().lower(), []).append(value)
    return index


def _canonical_header_value(values: list[str]) -> str:
    # Trimall: strip, collapse runs of whitespace (which also unfolds obsolete
    # multi-line values) -- botocore's ' '.join(v.split()). Repeats are joined
    # with ',' in the order received.
    return ",".join(" ".join(v.split()) for v in values)


def canonical_request(
    method: str,
    raw_path: str,
    query_string: str,
    headers: HeadersLike,
    signed_headers: Iterable[str],
    payload_hash: str,
    *,
    normalize_path: bool = True,
    exclude_query: Iterable[str] = (),
) -> str:
    """The SigV4 canonical request, built from exactly ``signed_headers``.

    A signed header absent from ``headers`` raises ``InvalidSignatureException``.
    """
    index = _index_headers(headers)
    names = list(signed_headers)
    lines = []
    for name in names:
        values = index.get(name.lower())
        if values is None:
            raise InvalidSignatureException(
                f"Header '{name}' is listed in SignedHeaders but is not present in the request."
            )
        lines.append(f"{name}:{_canonical_header_value(values)}\n")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path, normalize=normalize_path),
            canonical_query_string(query_string, exclude=exclude_query),
            "".join(lines),
            ";".join(names),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    k_date = _hmac(("AWS4" + secret_access_key).encode("utf-8"), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, TERMINATOR)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _signature(secret: str, date: str, region: str, service: str, sts: str) -> str:
    key = signing_key(secret, date, region, service)
    return hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------- verification


@dataclass(frozen=True)
class _AuthInfo:
    credential: str
    signed_headers: str
    signature: str
    amz_date: str  # ISO-8601 basic, as used in the string to sign
    date_header: str | None  # the header carrying the date, None for query auth
    presigned: bool
    expires: int | None = None


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime(AMZ_DATE_FORMAT)


def _fmt_span(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min."
    return f"{seconds:g} sec."


def _parse_amz_date(value: str) -> datetime:
    if _AMZ_DATE_RE.fullmatch(value):
        try:
            return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise IncompleteSignatureException(
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _parse_http_date(value: str) -> datetime:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise IncompleteSignatureException(
            f"Date header must be an RFC 1123 date, e.g. 'Sun, 30 Aug 2015 12:36:00 GMT'. Got '{value}'."
        ) from None
    if dt.tzinfo is None:  # '-0000' (what botocore sends) parses as naive; HTTP dates are UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _header_auth(value: str, index: dict[str, list[str]]) -> _AuthInfo:
    value = value.strip()
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(
            f"Unsupported AWS 'algorithm': '{algorithm}'. "
            f"Only '{ALGORITHM}' is supported. Authorization={value}"
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, val = part.partition("=")
        if not eq:
            raise IncompleteSignatureException(
                f"'{part}' not a valid key=value pair (missing equal-sign) "
                f"in Authorization header: '{value}'."
            )
        key = key.strip()
        if key in fields:
            raise IncompleteSignatureException(
                f"Authorization header has parameter '{key}' more than once. Authorization={value}"
            )
        fields[key] = val.strip()

    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not fields.get(name)
    ]
    if "x-amz-date" in index:
        date_header = "x-amz-date"
    elif "date" in index:
        date_header = "date"
    else:
        date_header = None
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems:
        raise IncompleteSignatureException(" ".join(problems) + f" Authorization={value}")

    assert date_header is not None  # else a problem was raised above
    raw_date = _canonical_header_value(index[date_header])
    if date_header == "x-amz-date":
        _parse_amz_date(raw_date)
        amz_date = raw_date
    else:
        amz_date = _fmt(_parse_http_date(raw_date))
    return _AuthInfo(
        credential=fields["Credential"],
        signed_headers=fields["SignedHeaders"],
        signature=fields["Signature"],
        amz_date=amz_date,
        date_header=date_header,
        presigned=False,
    )


def _query_auth(pairs: list[tuple[bytes, bytes]]) -> _AuthInfo:
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        name_s = name.decode("utf-8", "replace")
        if name_s in _QUERY_AUTH_PARAMS:
            params.setdefault(name_s, []).append(value.decode("utf-8", "replace"))
    if any(len(v) > 1 for v in params.values()) or any(
        not params.get(p, [""])[0] for p in _QUERY_AUTH_PARAMS
    ):
        raise IncompleteSignatureException(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters, each exactly once."
        )
    get = {k: v[0] for k, v in params.items()}
    if get["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignatureException(
            f"Unsupported AWS 'algorithm': '{get['X-Amz-Algorithm']}'. Only '{ALGORITHM}' is supported."
        )
    expires_raw = get["X-Amz-Expires"]
    if not expires_raw.isdigit() or not 1 <= int(expires_raw) <= MAX_PRESIGNED_EXPIRES:
        raise IncompleteSignatureException(
            f"X-Amz-Expires must be a whole number of seconds from 1 to "
            f"{MAX_PRESIGNED_EXPIRES}. Got '{expires_raw}'."
        )
    _parse_amz_date(get["X-Amz-Date"])
    return _AuthInfo(
        credential=get["X-Amz-Credential"],
        signed_headers=get["X-Amz-SignedHeaders"],
        signature=get["X-Amz-Signature"],
        amz_date=get["X-Amz-Date"],
        date_header=None,
        presigned=True,
        expires=int(expires_raw),
    )


def _find_auth(index: dict[str, list[str]], pairs: list[tuple[bytes, bytes]]) -> _AuthInfo:
    authorization = index.get("authorization")
    has_query_auth = any(
        name in (b"X-Amz-Algorithm", b"X-Amz-Credential", b"X-Amz-Signature")
        for name, _ in pairs
    )
    if authorization and has_query_auth:
        raise IncompleteSignatureException(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
            "or the Authorization header should be specified."
        )
    if authorization:
        if len(authorization) > 1:
            raise IncompleteSignatureException("The request has more than one Authorization header.")
        return _header_auth(authorization[0], index)
    if has_query_auth:
        return _query_auth(pairs)
    raise MissingAuthenticationTokenException("Request is missing Authentication Token")


def _lookup(
    credentials: Credentials | CredentialSource, access_key_id: str
) -> Credentials | None:
    if isinstance(credentials, Credentials):
        same = hmac.compare_digest(
            credentials.access_key_id.encode("utf-8"), access_key_id.encode("utf-8", "replace")
        )
        return credentials if same else None
    return credentials.get(access_key_id)


def _payload_hash(index: dict[str, list[str]], body: bytes) -> str:
    """The hash the client put in its canonical request.

    ``x-amz-content-sha256`` when sent (it must then match the body, unless it
    is ``UNSIGNED-PAYLOAD``), otherwise SHA-256 of the body -- what botocore
    signs for Rekognition.  Streaming (aws-chunked) payloads are not supported.
    """
    actual = hashlib.sha256(body).hexdigest()
    declared = index.get("x-amz-content-sha256")
    if declared is None:
        return actual
    value = _canonical_header_value(declared)
    if value == UNSIGNED_PAYLOAD:
        return value
    if not hmac.compare_digest(value.lower().encode("utf-8", "replace"), actual.encode()):
        raise InvalidSignatureException(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    return value


@dataclass(frozen=True)
class SigningPolicy:
    """Rules stricter than SigV4 itself, for a server that acts on what was signed.

    SigV4 only requires ``host`` (and the date header) to be signed; a request
    whose operation header is unsigned can be resent as another operation.
    ``must_sign`` headers and (with ``sign_all_amz``) every ``x-amz-*`` header
    must be in SignedHeaders when present; ``UNSIGNED-PAYLOAD`` is refused
    unless allowed (the body could then be swapped); presigned requests may
    live at most ``max_presign_expires`` seconds.
    """

    must_sign: frozenset[str] = frozenset()
    sign_all_amz: bool = False
    allow_unsigned_payload: bool = True
    max_presign_expires: int = MAX_PRESIGNED_EXPIRES


@dataclass(frozen=True)
class PendingRequest:
    """A request whose signature information passed every check that needs no body."""

    auth: _AuthInfo
    credentials: Credentials = field(repr=False)
    scope: str
    signed: tuple[str, ...]
    signed_at: datetime
    items: tuple[tuple[str, str], ...]
    index: dict[str, list[str]]

    @property
    def access_key_id(self) -> str:
        return self.credentials.access_key_id

    @property
    def presigned(self) -> bool:
        return self.auth.presigned


def _shown_header(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def preverify(
    method: str,
    path: str,
    query_string: str,
    headers: HeadersLike,
    credentials: Credentials | CredentialSource,
    *,
    service: str = "rekognition",
    region: str | None = None,
    now: datetime | None = None,
    max_clock_skew: timedelta = timedelta(minutes=15),
    policy: SigningPolicy | None = None,
) -> PendingRequest:
    """Every check :func:`verify_request` makes that does not need the body.

    Presence and form of the signature information, a known access key id,
    the credential scope, a fresh date and the signed-header rules (plus
    ``policy``).  Costs microseconds and no HMAC, so a server can run it before
    reading a body.  ``method`` and ``path`` are unused here; they are taken
    so both phases have the same signature shape.
    """
    del method, path
    items = _header_items(headers)  # once: ``headers`` may be a one-shot iterator
    index = _index_headers(items)
    pairs = _split_query(query_string)
    auth = _find_auth(index, pairs)

    parts = auth.credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise IncompleteSignatureException(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{auth.credential}'"
        )
    key_id, scope_date, scope_region, scope_service, terminator = parts

    creds = _lookup(credentials, key_id)
    if creds is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")

    if terminator != TERMINATOR:
        raise InvalidSignatureException(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
        )
    if scope_service != service:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{service}'.")
    if region is not None and scope_region != region:
        raise InvalidSignatureException(
            f"Credential should be scoped to a valid region, not '{scope_region}'."
        )
    if scope_date != auth.amz_date[:8]:
        raise InvalidSignatureException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope_date}' != '{auth.amz_date[:8]}', from '{auth.amz_date}'."
        )

    signed_at = _parse_amz_date(auth.amz_date)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if auth.presigned:
        assert auth.expires is not None
        if policy is not None and auth.expires > policy.max_presign_expires:
            raise InvalidSignatureException(
                f"X-Amz-Expires must be at most {policy.max_presign_expires} seconds on this "
                f"server. Got '{auth.expires}'."
            )
        valid_until = signed_at + timedelta(seconds=auth.expires)
        if now > valid_until:
            raise InvalidSignatureException(
                f"Signature expired: {_fmt(valid_until)} is now earlier than {_fmt(now)} "
                f"({auth.amz_date} + X-Amz-Expires {auth.expires} sec.)"
            )
    elif signed_at < now - max_clock_skew:
        raise InvalidSignatureException(
            f"Signature expired: {auth.amz_date} is now earlier than {_fmt(now - max_clock_skew)} "
            f"({_fmt(now)} - {_fmt_span(max_clock_skew)})"
        )
    if signed_at > now + max_clock_skew:
        raise InvalidSignatureException(
            f"Signature not yet current: {auth.amz_date} is still later than "
            f"{_fmt(now + max_clock_skew)} ({_fmt(now)} + {_fmt_span(max_clock_skew)})"
        )

    signed = auth.signed_headers.split(";")
    if not all(signed):
        raise IncompleteSignatureException(
            f"SignedHeaders must be a ';'-separated list of header names, got '{auth.signed_headers}'."
        )
    lowered = {name.lower() for name in signed}
    if "host" not in lowered:
        raise InvalidSignatureException(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    if auth.date_header is not None and auth.date_header not in lowered:
        shown = "X-Amz-Date" if auth.date_header == "x-amz-date" else "Date"
        raise InvalidSignatureException(
            f"'{shown}' must be a 'SignedHeader' in the AWS Authorization."
        )
    if policy is not None:
        _apply_policy(policy, index, lowered)

    return PendingRequest(
        auth=auth,
        credentials=creds,
        scope=f"{scope_date}/{scope_region}/{scope_service}/{TERMINATOR}",
        signed=tuple(signed),
        signed_at=signed_at,
        items=tuple(items),
        index=index,
    )


def _apply_policy(policy: SigningPolicy, index: dict[str, list[str]], signed: set[str]) -> None:
    unsigned = [name for name in sorted(index)  # sorted: the same request, the same message
                if (name in policy.must_sign or (policy.sign_all_amz and name.startswith("x-amz-")))
                and name not in signed]
    if unsigned:
        names = ", ".join(f"'{_shown_header(name)}'" for name in unsigned)
        raise InvalidSignatureException(
            f"{names} must be a 'SignedHeader' in the AWS Authorization.")
    declared = index.get("x-amz-content-sha256")
    if (not policy.allow_unsigned_payload and declared is not None
            and _canonical_header_value(declared) == UNSIGNED_PAYLOAD):
        raise InvalidSignatureException(
            f"'x-amz-content-sha256: {UNSIGNED_PAYLOAD}' is not accepted: the body must be signed."
        )


def verify_signature(
    pending: PendingRequest,
    method: str,
    path: str,
    query_string: str,
    body: bytes,
    *,
    normalize_path: bool = True,
) -> VerifiedRequest:
    """The second phase: body hash and HMAC over the canonical request."""
    auth = pending.auth
    payload_hash = _payload_hash(pending.index, body)
    canonical = canonical_request(
        method,
        path,
        query_string,
        pending.items,
        pending.signed,
        payload_hash,
        normalize_path=normalize_path,
        exclude_query=("X-Amz-Signature",) if auth.presigned else (),
    )
    scope_date, scope_region, scope_service, _ = pending.scope.split("/")
    sts = string_to_sign(auth.amz_date, pending.scope, canonical)
    expected = _signature(pending.credentials.secret_access_key, scope_date, scope_region,
                          scope_service, sts)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8", "replace")):
        raise InvalidSignatureException(SIGNATURE_MISMATCH)

    return VerifiedRequest(
        access_key_id=pending.access_key_id,
        region=scope_region,
        service=scope_service,
        date=pending.signed_at,
        signed_headers=pending.signed,
        presigned=auth.presigned,
    )


def verify_request(
    method: str,
    path: str,
    query_string: str,
    headers: HeadersLike,
    body: bytes,
    credentials: Credentials | CredentialSource,
    *,
    service: str = "rekognition",
    region: str | None = None,
    now: datetime | None = None,
    max_clock_skew: timedelta = timedelta(minutes=15),
    normalize_path: bool = True,
    policy: SigningPolicy | None = None,
) -> VerifiedRequest:
    """Check a request's SigV4 signature; return its signer or raise.

    ``path`` and ``query_string`` must be as on the request line, still
    percent-encoded (not WSGI's decoded ``PATH_INFO``), and ``body`` the exact
    bytes received.  ``credentials`` is one key pair or a mapping from access
    key id to key pair (any :class:`CredentialSource`).  ``region=None`` accepts any region in the credential
    scope.  A naive ``now`` is taken as UTC.  ``normalize_path=False`` gives
    S3's path rule; Rekognition, like every service but S3, normalises.
    ``X-Amz-Security-Token`` is not checked (faceaudit issues no temporary
    credentials); when signed it is covered by the signature like any header.
    Presigned (query-string) requests are accepted too, until X-Amz-Expires.
    ``policy`` adds rules beyond SigV4's (see :class:`SigningPolicy`); without
    it exactly SigV4's rules apply (what AWS's test suite checks).

    Same as :func:`preverify` followed by :func:`verify_signature`.

    Raises MissingAuthenticationTokenException (no signature at all),
    IncompleteSignatureException (malformed signature information),
    UnrecognizedClientException (unknown access key id) or
    InvalidSignatureException (wrong scope, clock skew, body hash or signature).
    """
    pending = preverify(method, path, query_string, headers, credentials, service=service,
                        region=region, now=now, max_clock_skew=max_clock_skew, policy=policy)
    return verify_signature(pending, method, path, query_string, body, normalize_path=normalize_path)
