"""Who is asking, and what the log will say about the request: the two values every part of this layer shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faceaudit.access import AccessKey

# Signed request headers that state why a search is made (docs/accountability.md). They
# count only when the SigV4 signature covers them: an unsigned header could be added by
# anyone on the way and proves nothing about the key holder.
PURPOSE_HEADER = "x-faceaudit-purpose"
CASE_HEADER = "x-faceaudit-case"
# Response header naming the review item a search under a review policy created.
REVIEW_ITEM_HEADER = "x-faceaudit-review-item"


@dataclass(frozen=True)
class Caller:
    """The proven signer of one request and what its signature covers.

    ``signed_headers``: lower-case name -> value, only the headers the signature covers.
    """

    key: AccessKey
    request_id: str
    at: datetime  # when the request arrived, UTC
    signed_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def purpose(self) -> str | None:
        return _stated(self.signed_headers.get(PURPOSE_HEADER))

    @property
    def case(self) -> str | None:
        return _stated(self.signed_headers.get(CASE_HEADER))


def key_fields(key: AccessKey | None) -> dict[str, Any] | None:
    """How a log record names a key: name, access key id, role, unit."""
    if key is None:
        return None
    return {"name": key.name, "access_key_id": key.access_key_id, "role": key.role, "unit": key.unit}


def utc_time(at: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds, as records carry it: 2026-12-01T23:15:01.123Z."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _stated(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@dataclass
class Facts:
    """What the search log records about one request, filled in as the request is handled.

    The guard fills it before and after the operation; the server adds status and error.
    Never holds an image: only its SHA-256.
    """

    operation: str | None = None
    collection: str | None = None
    policy: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # FaceMatchThreshold, MaxFaces, ...
    purpose: str | None = None
    case: str | None = None
    image_sha256: list[str] = field(default_factory=list)  # one per image in the request
    result: dict[str, int] = field(default_factory=dict)  # counts: faces, matches, users, ...
    matches: list[dict[str, Any]] = field(default_factory=list)  # {"FaceId"|"UserId", "Similarity"}
    review_item: str | None = None
    review_outcome: str | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)  # added to the response
