"""Access keys: what one is, how new ones are made, and the KeyStore interface that keeps them.

A key is a SigV4 access key id and secret with a *name* (the person or system using
it, shown in logs), a *role* (faceaudit.access.roles) and an optional *unit* (the team
or site it belongs to, for the search log and reports). Names are unique among active
keys; a revoked or rotated key keeps its row, so the log can still say whose it was.

SigV4 verification computes an HMAC with the secret itself, so the store must hold
the secret, not a hash of it (docs/access.md, "Secrets at rest").
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from faceaudit.access.roles import ADMIN, ROLES

__all__ = [
    "ACCESS_KEY_LENGTH",
    "INITIAL_KEY_NAME",
    "SECRET_KEY_LENGTH",
    "AccessKey",
    "IssuedKey",
    "KeyStore",
    "KeyStoreError",
    "KeyStoreUnavailable",
    "new_key_pair",
    "validate_new_key",
]

ACCESS_KEY_LENGTH = 20
SECRET_KEY_LENGTH = 40
_ACCESS_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
INITIAL_KEY_NAME = "initial"  # the key of a single-key start (credentials.json or the environment)
# Names and units appear in log lines and reports: printable, no spaces or quotes.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")

REVOKED = "revoked"
ROTATED = "rotated"


class KeyStoreError(Exception):
    """A key operation that cannot be done as asked; the message says why and what to do."""


class KeyStoreUnavailable(KeyStoreError):
    """The store could not be read (I/O error, locked for too long): requests fail closed."""


@dataclass(frozen=True)
class AccessKey:
    """One key as listed: everything but its secret."""

    access_key_id: str
    name: str
    role: str
    unit: str | None
    created: datetime
    origin: str  # "created", "rotated", "credentials.json" or "environment"
    revoked: datetime | None = None
    revoked_reason: str | None = None  # REVOKED or ROTATED
    replaced_by: str | None = None  # the access key id that rotation put in its place

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass(frozen=True)
class IssuedKey:
    """A key with its secret: what the signature check needs, and what `keys create` prints once."""

    key: AccessKey
    secret_access_key: str = field(repr=False)


def new_key_pair() -> tuple[str, str]:
    """A fresh (access key id, secret) shaped like AWS's: 20 upper-case letters and digits,
    40 letters and digits (no characters that need quoting in a shell or an env file)."""
    access = "".join(secrets.choice(_ACCESS_ALPHABET) for _ in range(ACCESS_KEY_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_KEY_LENGTH))
    return access, secret


def validate_new_key(name: str, role: str, unit: str | None) -> None:
    if not _NAME_RE.fullmatch(name):
        raise KeyStoreError(
            f"key name {name!r}: 1 to 64 letters, digits and _ . @ + -, starting with a letter or digit")
    if role not in ROLES:
        raise KeyStoreError(f"role {role!r}: one of {', '.join(ROLES)}")
    if unit is not None and not _NAME_RE.fullmatch(unit):
        raise KeyStoreError(
            f"unit {unit!r}: 1 to 64 letters, digits and _ . @ + -, starting with a letter or digit")


class KeyStore(Protocol):
    """Where keys live. SQLite in the data directory today (faceaudit.access.sqlite); a
    PostgreSQL backend keeps them in the same database as its faces.

    Every method is one transaction, and every change is visible to every process
    sharing the store from its next :meth:`lookup`: servers look keys up on every
    request, so there is no cache to invalidate.
    """

    def lookup(self, access_key_id: str) -> IssuedKey | None:
        """The key with this id, active or not (check ``key.active``); None if never issued.

        Called once per signed request before its body is read: one indexed read.
        Raises KeyStoreUnavailable when the store cannot be read."""
        ...

    def create(self, name: str, role: str, unit: str | None = None) -> IssuedKey:
        """A new key with a fresh id and secret. KeyStoreError if an active key has this name."""
        ...

    def adopt(self, access_key_id: str, secret_access_key: str, *, origin: str,
              name: str = INITIAL_KEY_NAME, role: str = ADMIN) -> tuple[AccessKey, bool]:
        """Take in a key made elsewhere (credentials.json, the environment), once.

        Idempotent by access key id: a known id is left as it is, revoked included, and
        returned with False. Its name is ``name``, or ``name-2``, ``name-3``... when an
        active key already has it. KeyStoreError if the id is known with another secret."""
        ...

    def keys(self, *, include_revoked: bool = False) -> list[AccessKey]:
        """Keys in creation order."""
        ...

    def has_keys(self) -> bool:
        """True once any key was ever stored (revoked ones included)."""
        ...

    def revoke(self, name_or_id: str, *, force: bool = False) -> AccessKey:
        """Revoke the active key with this access key id, else this name.

        Refused (KeyStoreError) for the last active admin key unless ``force``."""
        ...

    def rotate(self, name_or_id: str) -> IssuedKey:
        """Replace an active key by a new id and secret with the same name, role and unit;
        the old one is refused from the next request on (no grace period)."""
        ...

    def close(self) -> None: ...
