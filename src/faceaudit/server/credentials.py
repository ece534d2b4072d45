"""A server's first key: the single-key start, which becomes the admin key "initial".

Keys live in the key store (``DATA_DIR/access.db``, faceaudit.access); ``faceaudit keys``
adds more. A server start (:func:`open_keys`) takes in, once, the key pair a single-key
server has always used, as an admin key named "initial":

* ``FACEAUDIT_ACCESS_KEY_ID`` and ``FACEAUDIT_SECRET_ACCESS_KEY`` in the
  environment, when both are set;
* otherwise ``DATA_DIR/credentials.json``, generated on the first start of a data
  directory that holds no key yet (created with mode 0600, atomically: no reader ever
  sees a partial file and two servers starting at once on the same directory end up
  with the same keys) and reused by every later start.

Taking a key in is idempotent by access key id: a revoked or rotated one stays refused
however often the environment or the file names it again.

Generated keys look like AWS's: a 20-character access key id of upper-case
letters and digits and a 40-character secret (letters and digits only, so it
can be pasted into a shell or an env file without quoting).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from faceaudit.access import INITIAL_KEY_NAME, AccessKey, KeyStoreError, SQLiteKeyStore, new_key_pair
from faceaudit.access.postgres import PostgresKeyStore
from faceaudit.access.roles import ADMIN
from faceaudit.server.sigv4 import Credentials
from faceaudit.settings import ACCESS_KEY_ENV, SECRET_KEY_ENV, Settings  # the names: re-exported
from faceaudit.storage import is_postgres_url

__all__ = [
    "ACCESS_KEY_ENV",
    "CREDENTIALS_FILE",
    "SECRET_KEY_ENV",
    "CredentialsError",
    "LoadedCredentials",
    "StartedKeys",
    "generate",
    "load_or_create",
    "open_keys",
    "usage_note",
]

CREDENTIALS_FILE = "credentials.json"
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
    return Credentials(*new_key_pair())


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
        f"faceaudit: generated credentials, the admin key '{INITIAL_KEY_NAME}' (stored in "
        f"{loaded.path}, mode 0600; shown only this once):\n"
        f"    access key id:     {creds.access_key_id}\n"
        f"    secret access key: {creds.secret_access_key}\n"
        "  Use them with boto3:\n"
        f"    boto3.client('rekognition', endpoint_url='{endpoint_url}', region_name='us-east-1',\n"
        f"                 aws_access_key_id='{creds.access_key_id}',\n"
        "                 aws_secret_access_key='<secret access key above>')\n"
        f"  or set {ACCESS_KEY_ENV} / {SECRET_KEY_ENV} to choose your own. Keys for other people and\n"
        "  roles: 'faceaudit keys create --name NAME --role operator --data-dir DIR' (docs/access.md).")


@dataclass
class StartedKeys:
    """The key store a server opened, and what became of the single-key start's pair."""

    store: SQLiteKeyStore
    loaded: LoadedCredentials | None  # the pair of a single-key start, when there is one
    key: AccessKey | None  # that pair's key in the store
    adopted: bool  # True if this start took it in

    def warnings(self) -> list[str]:
        """What the person starting the server should know about its keys."""
        notes = []
        if self.key is not None and not self.key.active and self.loaded is not None:
            where = "the environment" if self.loaded.source == "environment" else str(self.loaded.path)
            notes.append(f"the key pair in {where} ({self.key.access_key_id}, key {self.key.name!r}) "
                         f"was {self.key.revoked_reason} and is refused ("
                         + ("unset the variables" if self.loaded.source == "environment" else "delete the file")
                         + " to silence this)")
        if not any(key.role == ADMIN for key in self.store.keys()):
            notes.append("no active admin key: nobody can create or delete collections "
                         "('faceaudit keys create --role admin' makes one)")
        return notes


def open_keys(data_dir: str | os.PathLike, *, settings: Settings | None = None,
              generate: bool = True, database: str | None = None) -> StartedKeys:
    """Open the key store of ``data_dir`` and take in the single-key start's pair (see above).

    With a postgresql:// ``database`` the keys are in that database (PostgresKeyStore), as
    the faces are; credentials.json, if any, stays in ``data_dir``.

    The pair comes from the environment (``settings``, default this process's), else
    credentials.json; with ``generate``, one is generated when the store has never held
    a key. Raises CredentialsError.
    """
    if settings is None:
        settings = Settings.from_env()
    directory = Path(data_dir)
    try:
        store = (PostgresKeyStore(database) if database is not None and is_postgres_url(database)
                 else SQLiteKeyStore(directory))
    except KeyStoreError as error:
        raise CredentialsError(str(error)) from None
    try:
        single_key = (settings.access_key_id or settings.secret_access_key
                      or (directory / CREDENTIALS_FILE).exists() or (generate and not store.has_keys()))
        if not single_key:
            return StartedKeys(store, None, None, False)
        loaded = load_or_create(directory, settings=settings)
        origin = "environment" if loaded.source == "environment" else CREDENTIALS_FILE
        key, adopted = store.adopt(loaded.credentials.access_key_id, loaded.credentials.secret_access_key,
                                   origin=origin, name=INITIAL_KEY_NAME, role=ADMIN)
        return StartedKeys(store, loaded, key, adopted)
    except KeyStoreError as error:
        store.close()
        raise CredentialsError(str(error)) from None
    except BaseException:
        store.close()
        raise
