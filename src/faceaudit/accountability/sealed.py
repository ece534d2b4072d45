"""Sealed blobs: probe images and face crops kept for blind review, encrypted at rest.

Review needs pictures (the probe a search was made with, the indexed faces it matched),
and pictures of people are what a leak would expose. Each blob is sealed with AES-256-GCM
(the ``cryptography`` package) under one key per data directory:

* the key is 32 random bytes in ``DATA_DIR/review.key``, mode 0600, created on first use
  (written to a temporary file and hard-linked into place, so two processes starting at
  once end up with the same key, never two);
* each blob is one 0600 file in ``DATA_DIR/sealed/`` (mode 0700), named by a random id
  that says nothing about whose face it is: ``magic | 12-byte nonce | ciphertext+tag``,
  with the blob's name as associated data, so a file renamed onto another's name does not
  open;
* writes go to a temporary file that is fsynced and renamed, so a killed process leaves
  either the whole blob or none.

What this protects against: a copy of the ``sealed/`` folder (a backup, a disk image, a
shared volume) without the key file. It does not protect against anyone who can read the
key file -- the server's own user can read both, so can root. Keep backups of the key
apart from backups of the blobs, or keep ``review.key`` out of them.

With PostgreSQL (``faceaudit serve --database postgresql://...``) the sealed blobs are rows
of ``review_blobs`` in that database (``bytea``, the same format), so a review item opened
through one server shows its pictures through every other. The key does **not** go into
the database: a dump or backup of the database then holds only ciphertext. Every host of
the deployment keeps the same ``review.key`` in its data directory: the first server to start
creates it and records its id (a SHA-256 of it, which reveals nothing of the key) in
``review_meta``; a server whose data directory has no key, or another one, refuses to start
and says to copy ``review.key`` from a host that has it (docs/accountability.md).

Purging deletes the file (the row). Overwriting it first would not make the old bytes unreadable:
on journaling and copy-on-write filesystems and on SSDs (wear levelling) a rewrite goes to
new blocks and the old ones linger until reused. Encryption is what makes deletion
meaningful: once the key is gone (``SealedBlobs.destroy_key``), every blob it sealed is
unreadable wherever its bytes remain.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["BLOB_DIRNAME", "KEY_FILENAME", "SealedBlobError", "SealedBlobMissing", "SealedBlobs"]

KEY_FILENAME = "review.key"
BLOB_DIRNAME = "sealed"
_MAGIC = b"FAS1"  # faceaudit sealed blob, format 1
_NONCE_BYTES = 12  # AES-GCM's standard nonce; random per blob (far below the 2**32 blobs per key bound)
_KEY_BYTES = 32
_BLOB_ID_CHARS = frozenset("0123456789abcdef")


class SealedBlobError(Exception):
    """A blob or the key cannot be used: missing, readable by others, or altered."""


class SealedBlobMissing(SealedBlobError):
    """No blob by that id (never sealed, or deleted)."""


def _private_dir(path: Path) -> None:
    """``path`` as a 0700 directory (created if absent; mkdir's mode is filtered by the umask)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> Path:
    """``data`` in a new 0600 file next to ``path`` (a temporary name), fsynced; returns its path."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


def install_key(path: Path, key: bytes) -> bool:
    """Write ``key`` to ``path`` (0600, fsynced) unless a file is already there; whether it was written.

    Through a temporary file linked into place: atomic, and never over another key."""
    temporary = _write_private(path, key)
    try:
        os.link(temporary, path)
        _fsync_dir(path.parent)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def key_id(key: bytes) -> bytes:
    """What the database records of the sealing key: a one-way digest (16 bytes) that names it."""
    return hashlib.sha256(b"faceaudit review sealing key\0" + key).digest()[:16]


class SealedBlobs:
    """AES-GCM sealed blobs in ``data_dir/sealed`` under the key ``data_dir/review.key``.

    ``database`` (faceaudit.storage.sql_database, the review store's PostgreSQL tables): the
    blobs are rows of ``review_blobs`` there instead, and the key must be the one the
    database's ``review_meta`` names."""

    def __init__(self, data_dir: str | os.PathLike, *, key_path: str | os.PathLike | None = None,
                 database: Any = None):
        self.data_dir = Path(data_dir)
        if not self.data_dir.exists():
            _private_dir(self.data_dir)
        self.key_path = Path(key_path) if key_path is not None else self.data_dir / KEY_FILENAME
        self.blob_dir = self.data_dir / BLOB_DIRNAME
        self._db = database
        if database is None:
            _private_dir(self.blob_dir)
        key = self._load_or_create_key()
        if database is not None:
            self._check_key(key)
        self._aead = AESGCM(key)

    # -- the key ------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return str(self.blob_dir) if self._db is None else self._db.describe

    def _recorded_key_id(self) -> bytes | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT value FROM review_meta WHERE name = 'sealing_key_id'").fetchone()
        return None if row is None else bytes(row[0])

    def _check_key(self, key: bytes) -> None:
        """The database's pictures are sealed with one key: this host's must be it (recorded by the first)."""
        with self._db.write() as conn:
            row = conn.execute("SELECT value FROM review_meta WHERE name = 'sealing_key_id'").fetchone()
            if row is None:
                conn.execute("INSERT INTO review_meta (name, value) VALUES ('sealing_key_id', ?)", (key_id(key),))
                return
        if bytes(row[0]) != key_id(key):
            raise SealedBlobError(
                f"{self.key_path} is not the key the review pictures in {self._where} are sealed with (another "
                "server of this database created that one): copy review.key from that server's data directory "
                "to this one (mode 0600)")

    def _load_or_create_key(self) -> bytes:
        if not self.key_path.exists():
            if self._db is not None and self._recorded_key_id() is not None:
                raise SealedBlobError(
                    f"{self.key_path} is missing, and the review pictures in {self._where} are sealed with a key "
                    "a server of this database created: copy review.key from that server's data directory "
                    "(or restore it from its backup) to this one (mode 0600)")
            if self.blob_ids():  # a lost key must not be silently replaced: those blobs would never open
                raise SealedBlobError(
                    f"{self.key_path} is missing but {len(self.blob_ids())} sealed blobs exist in "
                    f"{self._where}; restore the key from its backup (or delete the blobs to start afresh)")
            install_key(self.key_path, secrets.token_bytes(_KEY_BYTES))  # False: another process was first
        mode = stat.S_IMODE(os.stat(self.key_path).st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SealedBlobError(
                f"{self.key_path} is accessible to other users (mode {mode:04o}); the review images "
                f"it protects may have leaked. Run 'chmod 600 {self.key_path}'")
        key = self.key_path.read_bytes()
        if len(key) != _KEY_BYTES:
            raise SealedBlobError(f"{self.key_path} is not a faceaudit review key ({len(key)} bytes, "
                                  f"expected {_KEY_BYTES})")
        return key

    def destroy_key(self) -> None:
        """Delete the key file: every blob sealed with it becomes unreadable (and the blobs are deleted)."""
        if self._db is not None:
            with self._db.write() as conn:
                conn.execute("DELETE FROM review_blobs")
                conn.execute("DELETE FROM review_meta WHERE name = 'sealing_key_id'")
        else:
            for path in self.blob_dir.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.key_path.unlink()

    # -- blobs --------------------------------------------------------------------
    def _path(self, blob_id: str) -> Path:
        if len(blob_id) != 32 or not set(blob_id) <= _BLOB_ID_CHARS:
            raise SealedBlobError(f"not a sealed blob id: {blob_id[:40]!r}")
        return self.blob_dir / blob_id

    def seal(self, data: bytes, *, sync: bool = True) -> str:
        """Encrypt and store ``data``; returns its new id (32 hex characters).

        ``sync=False`` leaves the directory entry to a later :meth:`sync` (one for many blobs).
        """
        blob_id = secrets.token_hex(16)
        path = self._path(blob_id)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = _MAGIC + nonce + self._aead.encrypt(nonce, bytes(data), blob_id.encode("ascii"))
        if self._db is not None:  # committed (durable) before the row that names it, as a file is
            with self._db.write() as conn:
                conn.execute("INSERT INTO review_blobs (blob_id, sealed, sealed_at) VALUES (?, ?, ?)",
                             (blob_id, sealed, time.time()))
            return blob_id
        temporary = _write_private(path, sealed)
        os.replace(temporary, path)
        if sync:
            self.sync()
        return blob_id

    def sync(self) -> None:
        """Make the names of the blobs sealed so far durable (fsync of the directory)."""
        if self._db is None:  # in the database each seal is a commit of its own
            _fsync_dir(self.blob_dir)

    def open(self, blob_id: str) -> bytes:
        """The bytes sealed as ``blob_id``; SealedBlobError if missing or altered."""
        path = self._path(blob_id)
        try:
            sealed = self._read(blob_id, path)
        except FileNotFoundError:
            raise SealedBlobMissing(f"sealed blob {blob_id} is missing") from None
        head = len(_MAGIC) + _NONCE_BYTES
        if len(sealed) < head or not sealed.startswith(_MAGIC):
            raise SealedBlobError(f"sealed blob {blob_id} is not in faceaudit's format")
        try:
            return self._aead.decrypt(sealed[len(_MAGIC):head], sealed[head:], blob_id.encode("ascii"))
        except InvalidTag:
            raise SealedBlobError(f"sealed blob {blob_id} was altered or sealed with another key") from None

    def _read(self, blob_id: str, path: Path) -> bytes:
        if self._db is None:
            return path.read_bytes()
        with self._db.read() as conn:
            row = conn.execute("SELECT sealed FROM review_blobs WHERE blob_id = ?", (blob_id,)).fetchone()
        if row is None:
            raise FileNotFoundError(blob_id)
        return bytes(row[0])

    def sealed_at(self, blob_id: str) -> float:
        """When the blob was written (its file's mtime, seconds since the epoch); inf if it is gone."""
        path = self._path(blob_id)
        if self._db is not None:
            with self._db.read() as conn:
                row = conn.execute("SELECT sealed_at FROM review_blobs WHERE blob_id = ?", (blob_id,)).fetchone()
            return float("inf") if row is None else float(row[0])
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return float("inf")

    def exists(self, blob_id: str) -> bool:
        path = self._path(blob_id)
        if self._db is not None:
            with self._db.read() as conn:
                return conn.execute("SELECT 1 FROM review_blobs WHERE blob_id = ?", (blob_id,)).fetchone() is not None
        return path.exists()

    def delete(self, blob_id: str) -> bool:
        """Remove a blob (True if it was there). Deletion, not overwriting: see the module docstring."""
        path = self._path(blob_id)
        if self._db is not None:
            with self._db.write() as conn:
                return bool(conn.execute("DELETE FROM review_blobs WHERE blob_id = ? RETURNING blob_id",
                                         (blob_id,)).fetchall())
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def blob_ids(self) -> list[str]:
        """Ids of the blobs on disk (temporary files of interrupted writes excluded)."""
        if self._db is not None:
            with self._db.read() as conn:
                return sorted(row[0] for row in conn.execute("SELECT blob_id FROM review_blobs"))
        return sorted(p.name for p in self.blob_dir.iterdir() if not p.name.startswith("."))
