"""The one key pair a faceaudit server accepts, as MinIO's root user works.

* ``FACEAUDIT_ACCESS_KEY_ID`` and ``FACEAUDIT_SECRET_ACCESS_KEY`` in the
  environment, when both are set;
* otherwise ``DATA_DIR/credentials.json``, generated on the first start
  (created with mode 0600, atomically: no reader ever sees a partial file and
  two servers starting at once on the same directory end up with the same
  keys) and reused by every later start.

Generated keys look like AWS's: a 20-character access key id of upper-case
letters and digits and a 40-character secret (letters and digits only, so it
can be pasted into a shell or an env file without quoting).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import string
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from faceaudit.server.sigv4 import Credentials
from faceaudit.settings import ACCESS_KEY_ENV, SECRET_KEY_ENV, Settings  # the names: re-exported

__all__ = [
    "ACCESS_KEY_ENV",
    "CREDENTIALS_FILE",
    "SECRET_KEY_ENV",
    "CredentialsError",
    "LoadedCredentials",
    "generate",
    "load_or_create",
    "usage_note",
]

CREDENTIALS_FILE = "credentials.json"
ACCESS_KEY_LENGTH = 20
SECRET_KEY_LENGTH = 40
_ACCESS_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
# An access key id travels inside the SigV4 Credential field, which is split on '/'.
_MIN_ACCESS_KEY, _MIN_SECRET = 3, 8


class CredentialsError(Exception):
    """The configured or stored credentials cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class LoadedCredentials:
    credentials: Credentials
    source: str  # "environment", "file" or "generated"
    path: Path | None  # the credentials file, when it was used or written


def generate() -> Credentials:
    access = "".join(secrets.choice(_ACCESS_ALPHABET) for _ in range(ACCESS_KEY_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_KEY_LENGTH))
    return Credentials(access, secret)


def _check(access: str, secret: str, where: str) -> Credentials:
    if len(access) < _MIN_ACCESS_KEY or any(c.isspace() or c == "/" for c in access):
        raise CredentialsError(
            f"{where}: the access key id must be at least {_MIN_ACCESS_KEY} characters, "
            "without spaces or '/'")
    if len(secret) < _MIN_SECRET or any(c.isspace() for c in secret):
        raise CredentialsError(
            f"{where}: the secret access key must be at least {_MIN_SECRET} characters, without spaces")
    return Credentials(access, secret)


def _read(path: Path) -> Credentials:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
            f"its secret may have leaked. Run 'chmod 600 {path}' (and consider deleting it "
            "to have new keys generated)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _check(str(data["access_key_id"]), str(data["secret_access_key"]), str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(
            f"{path} is not a faceaudit credentials file ({exc}); delete it to have new keys "
            f"generated, or set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}") from None


def _create(path: Path, creds: Credentials) -> bool:
    """Write ``path`` (0600) unless it exists; True if this call wrote it.

    The file is written under a temporary name and then hard-linked into place:
    ``link`` fails if the name exists, so of two servers starting together only
    one writes, and a reader sees the whole file or none.
    """
    payload = json.dumps({"access_key_id": creds.access_key_id,
                          "secret_access_key": creds.secret_access_key}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; be explicit
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_or_create(data_dir: str | os.PathLike, environ: Mapping[str, str] | None = None, *,
                   settings: Settings | None = None) -> LoadedCredentials:
    """The server's credentials: environment, else the stored file, else new ones (stored).

    The environment is ``settings``, else ``Settings.from_env(environ)`` (default: this process's).
    """
    if settings is None:
        settings = Settings.from_env(environ)
    access, secret = settings.access_key_id or "", settings.secret_access_key or ""
    if access or secret:
        if not (access and secret):
            raise CredentialsError(
                f"set both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, or neither (keys are then "
                f"generated and stored in {Path(data_dir) / CREDENTIALS_FILE})")
        return LoadedCredentials(_check(access, secret, "environment"), "environment", None)

    directory = Path(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / CREDENTIALS_FILE
    if path.exists():
        return LoadedCredentials(_read(path), "file", path)
    fresh = generate()
    if _create(path, fresh):
        return LoadedCredentials(fresh, "generated", path)
    return LoadedCredentials(_read(path), "file", path)  # another process won the race


def usage_note(loaded: LoadedCredentials, endpoint_url: str) -> str:
    """What to print once, when keys were generated: the keys and how to use them."""
    creds = loaded.credentials
    return (
        "faceaudit: generated credentials (stored in "
        f"{loaded.path}, mode 0600; shown only this once):\n"
        f"    access key id:     {creds.access_key_id}\n"
        f"    secret access key: {creds.secret_access_key}\n"
        "  Use them with boto3:\n"
        f"    boto3.client('rekognition', endpoint_url='{endpoint_url}', region_name='us-east-1',\n"
        f"                 aws_access_key_id='{creds.access_key_id}',\n"
        "                 aws_secret_access_key='<secret access key above>')\n"
        f"  or set {ACCESS_KEY_ENV} / {SECRET_KEY_ENV} to choose your own.")
