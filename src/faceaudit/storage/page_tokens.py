"""NextToken for paged listings: opaque, tamper-proof, tied to the listing it came from.

A token carries the last row id a page ended on (``after``), which listing it
belongs to (``kind`` and ``scope``, e.g. faces of one collection) and a digest
of that listing's filters, signed with a per-store secret (HMAC-SHA256,
truncated). A token from another store, another listing or other filters, or
an edited one, is refused with InvalidPaginationTokenException, as Rekognition
refuses a token it did not issue. Any backend that pages by increasing row id
can use it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from faceaudit.errors import InvalidPaginationTokenException

# version, kind, scope (e.g. collection rowid), last rowid seen, filter digest; + HMAC.
_TOKEN = struct.Struct("<BBqq8s")
_MAC_BYTES = 12
_VERSION = 1
MAX_TOKEN_LENGTH = 255  # Rekognition's NextToken limit

KIND_COLLECTIONS, KIND_FACES, KIND_USERS = 1, 2, 3
NO_FILTER = b"\0" * 8


def filter_digest(canonical: str) -> bytes:
    """The 8-byte digest of a listing's filters, given their canonical text form."""
    return hashlib.sha256(canonical.encode()).digest()[:8]


class PageTokens:
    """Issues and checks NextTokens with one secret (keep it for as long as tokens must stay valid)."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, kind: int, scope: int, after: int, digest: bytes = NO_FILTER) -> str:
        """The token for the page after row id ``after`` of listing (kind, scope, digest)."""
        payload = _TOKEN.pack(_VERSION, kind, scope, after, digest)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii").rstrip("=")

    def after(self, token: object, kind: int, scope: int, digest: bytes = NO_FILTER) -> int:
        """The last row id seen, from ``token`` (None or "": the start of the listing)."""
        if token is None or token == "":
            return 0
        bad = InvalidPaginationTokenException("Invalid token")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise bad from None
        if len(raw) != _TOKEN.size + _MAC_BYTES:
            raise bad
        payload, mac = raw[:_TOKEN.size], raw[_TOKEN.size:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise bad
        version, token_kind, token_scope, after, token_digest = _TOKEN.unpack(payload)
        if (version, token_kind, token_scope, token_digest) != (_VERSION, kind, scope, digest):
            raise bad
        return int(after)
