"""Keys and roles on the request path: which key signed a request, and may its role call the operation.

* :class:`StoreKeys` is what ``sigv4.preverify`` looks access key ids up in: a KeyStore
  read on every request, before the body is read. A revoked or rotated key is refused
  from the next request on, in every process sharing the data directory; to the client
  it looks like an unknown key (UnrecognizedClientException), the log says which it was.
* :func:`authorize` checks the role against faceaudit.access.roles once the signature
  is verified; a refusal is AccessDeniedException naming the key, its role and the
  operation (never before verification: an unsigned claim must not produce denials
  attributed to someone's key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from faceaudit.access import INITIAL_KEY_NAME, AccessKey, KeyStore, KeyStoreUnavailable, roles_for
from faceaudit.access.roles import ADMIN, allows
from faceaudit.errors import AccessDeniedException, InternalServerError, UnrecognizedClientException
from faceaudit.server import sigv4

__all__ = ["KeyCredentials", "KeyDenied", "KeyRefused", "StaticKeys", "StoreKeys", "authorize"]

UNRECOGNIZED = "The security token included in the request is invalid."
log = logging.getLogger("faceaudit.server")


@dataclass(frozen=True)
class KeyCredentials(sigv4.Credentials):
    """The key pair sigv4 verifies with, and the key it belongs to."""

    key: AccessKey | None = None


class KeyRefused(UnrecognizedClientException):
    """A known key that may no longer sign (revoked or rotated); answered as an unknown key."""

    def __init__(self, key: AccessKey):
        super().__init__(UNRECOGNIZED)
        self.key = key
        # The signature is not checked yet, so the log names the key in the reason, not as the signer.
        self.reason = f"{key.revoked_reason} key {key.name!r} ({key.access_key_id})"


class KeyDenied(AccessDeniedException):
    """The key's role may not call the operation (or not this way)."""

    def __init__(self, message: str, key: AccessKey, reason: str):
        super().__init__(message)
        self.key = key
        self.reason = reason


class StoreKeys:
    """sigv4's credential source over a KeyStore, with no cache: each lookup is one read."""

    def __init__(self, store: KeyStore):
        self.store = store

    def get(self, access_key_id: str) -> KeyCredentials | None:
        try:
            issued = self.store.lookup(access_key_id)
        except KeyStoreUnavailable as error:  # fail closed; the details go to the log, not to anyone
            log.error("the key store could not be read: %s", error)
            raise InternalServerError("Internal server error") from error
        if issued is None:
            return None
        if not issued.key.active:
            raise KeyRefused(issued.key)
        return KeyCredentials(issued.key.access_key_id, issued.secret_access_key, issued.key)


class StaticKeys:
    """Fixed key pairs, each an admin key (what a single-key app built in-process gets)."""

    def __init__(self, credentials: sigv4.Credentials | Mapping[str, sigv4.Credentials]):
        pairs = [credentials] if isinstance(credentials, sigv4.Credentials) else list(credentials.values())
        created = datetime.now(UTC)
        self._keys = {
            pair.access_key_id: KeyCredentials(
                pair.access_key_id, pair.secret_access_key,
                AccessKey(pair.access_key_id, INITIAL_KEY_NAME if len(pairs) == 1 else pair.access_key_id,
                          ADMIN, None, created, "static"))
            for pair in pairs}

    def get(self, access_key_id: str) -> KeyCredentials | None:
        return self._keys.get(access_key_id)


def key_of(pending: sigv4.PendingRequest) -> AccessKey:
    """The key that signed a preverified request."""
    creds = pending.credentials
    if isinstance(creds, KeyCredentials) and creds.key is not None:
        return creds.key
    raise TypeError("the app's credential source must give KeyCredentials")  # a wiring bug


def authorize(key: AccessKey, operation: str) -> None:
    """AccessDeniedException unless the key's role may call ``operation`` (faceaudit.access.roles)."""
    if allows(key.role, operation):
        return
    allowed = roles_for(operation)
    who = f"roles that may: {', '.join(allowed)}" if allowed else "no role may"
    raise KeyDenied(
        f"The key '{key.name}' (role {key.role}) is not authorized to perform: "
        f"rekognition:{operation} ({who}; see docs/access.md)",
        key, f"role {key.role} may not call {operation}")
