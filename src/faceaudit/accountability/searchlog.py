"""The search log: one hash-chained record per request (and per policy, moratorium, review... event),
durable before the answer is sent, with signed checkpoints an overseer can keep.

Record format (docs/accountability.md, "The search log"): one JSON object with the fields of
:data:`RECORD_FIELDS`; the log adds ``seq`` (1, 2, ...), ``prev`` (the previous record's hash,
64 zeros for the first) and ``hash`` = SHA-256 of ``prev`` followed by the canonical JSON of the
record without ``hash`` (:func:`canonical`: sorted keys, no spaces, UTF-8). Editing, deleting,
inserting or reordering a stored record breaks the chain at that record, and
:func:`verify` names the first one that does.

A chain alone cannot tell a log that lost its tail from a shorter honest one, nor a tail that
was rewritten with fresh hashes. So every ``checkpoint_every`` records or ``checkpoint_seconds``
(whichever comes first) the log signs a *checkpoint* -- ``{log_id, seq, hash, tree_root, time,
key_id}``, ``tree_root`` being the root of the records' Merkle tree (faceaudit.accountability.merkle:
inclusion and consistency proofs without the log) --
with an Ed25519 key kept in the data directory (``searchlog-signing.key``, mode 0600).
``faceaudit log checkpoint`` writes the newest one (with the public key) to a file for an
overseer to keep elsewhere; verifying against it later proves the log still holds that prefix.
The key lives beside the log, so whoever controls the data directory can sign too: the
signature makes a kept checkpoint attributable to the server's key (an overseer cannot forge
one), it does not make the server's copy trustworthy. Only checkpoints kept outside do that.

Storage: ``DATA_DIR/searchlog.db``, SQLite in WAL mode with ``synchronous=FULL`` (tables
``searchlog_records``, ``searchlog_checkpoints``, ``searchlog_meta``, ``searchlog_keys``, their
schema versioned by faceaudit.storage.migrations); each append
is one ``BEGIN IMMEDIATE`` transaction that reads the head, inserts the record (and a
checkpoint when one is due) and commits -- one fsync of the WAL. Chosen over an append-only
file with a lock and fsync because it costs the same one flush per record on this disk
(~4 ms measured either way), while SQLite already gives what the file would need code for:
locking across the server's processes and threads on one data directory (the head is read
inside the write lock, so two writers can never chain to the same record), atomic commits
(a process killed mid-append leaves no torn half-record to repair), and the same
transaction helper as the face and key stores. The record text is stored exactly as hashed,
so ``sqlite3`` (or anyone with the export) can check it without faceaudit.

With PostgreSQL (``faceaudit serve --database postgresql://...``) the same tables are in that
database (faceaudit.storage.sql_database), and there is **one chain for every server process
and host on it**: an append is one transaction that first takes the log's transaction-scoped
advisory lock (``pg_advisory_xact_lock``), then reads the head, inserts and commits, so two
hosts can never chain to the same record, and the answer waits for the commit (durable, with
PostgreSQL's default ``synchronous_commit = on``). The in-process group commit stays: the
threads of one process that append while a transaction is in flight share the next one.

Signing keys with several hosts: each data directory keeps its own ``searchlog-signing.key``
(a private key is never copied between hosts, nor put in the shared database), and its public
key is recorded in ``searchlog_keys`` by key id when the log is opened; a checkpoint names
the key that signed it (``key_id``) and is verified with that key. A checkpoint signed by a
key the log does not list fails verification. What the keys prove is unchanged: a kept
checkpoint is attributable to the host that signed it; whoever can write the database can
also list a key of their own, so only checkpoints kept outside (``faceaudit log checkpoint``)
make the log's copy trustworthy -- and one kept from any host vouches for the whole chain.

Requests refused before their signature was verified (unknown key, bad signature, bodies too
large...) carry no proven identity, and anyone can send millions: they are counted in memory
(:meth:`SearchLog.note_refused`) and written as one ``unauthenticated`` record per
``refused_interval`` seconds with the counts by error, piggybacked on the next append's
transaction when there is one (no extra fsync), else flushed on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from faceaudit.access import AccessKey
from faceaudit.accountability.context import Facts, key_fields, utc_time
from faceaudit.accountability.merkle import (
    consistency_proof,
    frontier_push,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from faceaudit.storage.migrations import Step, latest_version
from faceaudit.storage.sql_database import (
    POSTGRES,
    SQLITE,
    Connection,
    Database,
    PostgresDatabase,
    SQLiteDatabase,
    SqlStore,
    StoreSchema,
    open_database,
)

__all__ = [
    "DB_FILENAME",
    "KEY_FILENAME",
    "KINDS",
    "RECORD_FIELDS",
    "ZERO_HASH",
    "LogContents",
    "Problem",
    "SearchLog",
    "SearchLogError",
    "Verification",
    "canonical",
    "check_consistency",
    "check_inclusion",
    "describe_request",
    "describe_response",
    "read_checkpoint_file",
    "read_data_dir",
    "read_export",
    "record_hash",
    "request_record",
    "utc_time",
    "verify",
]

DB_FILENAME = "searchlog.db"
KEY_FILENAME = "searchlog-signing.key"
EXPORT_FORMAT = "faceaudit-searchlog-export"
CHECKPOINT_FORMAT = "faceaudit-searchlog-checkpoint"
INCLUSION_FORMAT = "faceaudit-searchlog-inclusion-proof"
CONSISTENCY_FORMAT = "faceaudit-searchlog-consistency-proof"
ZERO_HASH = "0" * 64
KINDS = ("request", "moratorium", "policy", "review", "retention", "key", "unauthenticated")
# Every record has every field; what the writer does not supply is stored null / empty.
RECORD_FIELDS: dict[str, Any] = {
    "kind": None, "time": None, "request_id": None, "key": None, "operation": None,
    "collection": None, "policy": None, "parameters": {}, "purpose": None, "case": None,
    "image_sha256": [], "status": None, "error": None, "reason": None, "result": {},
    "matches": [], "review": None, "details": {},
}
ADDED_FIELDS = ("seq", "prev", "hash")
DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_SECONDS = 300.0
DEFAULT_REFUSED_INTERVAL = 60.0
BUSY_TIMEOUT_S = 30.0
_LOG_LOCK = 0x736C6F67  # "slog": the advisory lock every append takes (one chain for all hosts)
MAX_READ_BATCH = 4096  # records one statement of newest_texts reads at the most
# "the record's text contains ?", exactly (case and all), in each database's words
_CONTAINS = {SQLITE: "instr(record, ?) > 0", POSTGRES: "strpos(record, ?) > 0"}

_TABLES = [
    "CREATE TABLE searchlog_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE searchlog_records (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, record TEXT NOT NULL)",
    # frontier: the Merkle tree's perfect subtrees at seq (frontier_push), so the next
    # checkpoint's tree root needs only the records since.
    "CREATE TABLE searchlog_checkpoints (seq BIGINT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, "
    "checkpoint TEXT NOT NULL, frontier TEXT NOT NULL)",
    # every key that signs checkpoints (one per data directory writing the log): key id -> base64
    "CREATE TABLE searchlog_keys (key_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, "
    "added_at DOUBLE PRECISION NOT NULL)",
]


def _new_log_id(conn: Connection) -> None:
    if conn.execute("SELECT 1 FROM searchlog_meta WHERE name = 'log_id'").fetchone() is None:
        conn.execute("INSERT INTO searchlog_meta (name, value) VALUES ('log_id', ?)", (secrets.token_hex(16),))


# SQLite. Version 1 is the layout logs had before the schema went onto the migration runner
# (created if absent, kept if there: such a log has no schema_version table yet); version 2
# gives the tables the names they have in PostgreSQL, beside the faces' own tables.
MIGRATIONS: dict[int, list[Step]] = {
    1: ["CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, record TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER PRIMARY KEY, at REAL NOT NULL, "
        "checkpoint TEXT NOT NULL, frontier TEXT NOT NULL)"],
    2: ["ALTER TABLE meta RENAME TO searchlog_meta",
        "ALTER TABLE records RENAME TO searchlog_records",
        "ALTER TABLE checkpoints RENAME TO searchlog_checkpoints",
        "DELETE FROM searchlog_meta WHERE name = 'schema_version'",  # the runner's table keeps it now
        _TABLES[3], _new_log_id],
}
POSTGRES_MIGRATIONS: dict[int, list[Step]] = {1: [*_TABLES, _new_log_id]}
SCHEMA_VERSION = latest_version(MIGRATIONS)
POSTGRES_VERSION_TABLE = "searchlog_schema_version"
_STORE_SCHEMA = StoreSchema(MIGRATIONS, POSTGRES_MIGRATIONS, POSTGRES_VERSION_TABLE)


def _open_log_database(data_dir: Path, database: str | None) -> SQLiteDatabase | PostgresDatabase:
    """The log's tables (migrated to this code's schema): ``data_dir/searchlog.db`` or PostgreSQL."""
    return open_database(database, data_dir / DB_FILENAME, lock=_LOG_LOCK, name="search log",
                         unavailable=SearchLogError, busy_timeout=BUSY_TIMEOUT_S, pool_size=2, schema=_STORE_SCHEMA)


def _postgres_log_exists(database: str) -> bool:
    """Whether the PostgreSQL database holds a search log already (read only)."""
    import psycopg

    try:
        with psycopg.connect(database, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT to_regclass('searchlog_records')").fetchone()
            return row is not None and row[0] is not None
    except psycopg.Error as error:
        raise SearchLogError(f"cannot reach the search log's PostgreSQL database: {error}") from None


class SearchLogError(Exception):
    """The log cannot be opened, read or written as asked; the message says why."""


def canonical(value: Any) -> str:
    """The one JSON form that is hashed and stored: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256(prev + canonical(record without "hash")), hex."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256((str(record.get("prev")) + canonical(body)).encode("utf-8")).hexdigest()


def _normalized(record: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(record) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown search log fields: {', '.join(sorted(unknown))} "
                         f"(the log itself adds {', '.join(ADDED_FIELDS)})")
    body = {name: record.get(name, default) for name, default in RECORD_FIELDS.items()}
    for name, default in RECORD_FIELDS.items():
        if body[name] is None and default is not None:
            body[name] = type(default)()
    if body["kind"] not in KINDS:
        raise ValueError(f"search log record kind {body['kind']!r} is not one of {', '.join(KINDS)}")
    body["time"] = body["time"] or utc_time()
    try:
        canonical(body)
    except (TypeError, ValueError) as error:
        raise ValueError(f"search log record is not plain JSON: {error}") from None
    return json.loads(canonical(body))  # a copy: later changes to the caller's dicts change nothing


# ------------------------------------------------------------------ records of requests

# Request parameters the log keeps (never an image: its SHA-256 goes in image_sha256).
LOGGED_PARAMETERS = ("FaceMatchThreshold", "UserMatchThreshold", "SimilarityThreshold", "MaxFaces", "MaxUsers",
                     "MaxResults", "QualityFilter", "FaceId", "UserId")
_IMAGE_PARAMETERS = ("Image", "SourceImage", "TargetImage")


def describe_request(facts: Facts, request: Mapping[str, Any]) -> None:
    """Fill what ``facts`` does not hold yet from a decoded request (collection, parameters, image hashes).

    Only empty fields are filled, so whatever the guard recorded first stands.
    """
    collection = request.get("CollectionId")
    if facts.collection is None and isinstance(collection, str):
        facts.collection = collection
    for name in LOGGED_PARAMETERS:
        value = request.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            facts.parameters.setdefault(name, value)
    if not facts.image_sha256:
        for name in _IMAGE_PARAMETERS:
            image = request.get(name)
            if isinstance(image, Mapping) and isinstance(image.get("Bytes"), bytes | bytearray):
                facts.image_sha256.append(hashlib.sha256(image["Bytes"]).hexdigest())
            elif isinstance(image, Mapping) and isinstance(image.get("S3Object"), Mapping):
                where = image["S3Object"]
                facts.parameters.setdefault(f"{name}.S3Object", f"{where.get('Bucket')}/{where.get('Name')}")


def describe_response(facts: Facts, response: Mapping[str, Any]) -> None:
    """Fill the result counts and the matches (FaceId or UserId, Similarity) from a response, if empty."""
    if not facts.result:
        for name, count in (("FaceMatches", "matches"), ("UserMatches", "matches"), ("FaceRecords", "indexed"),
                            ("UnindexedFaces", "unindexed"), ("FaceDetails", "faces"), ("Faces", "faces"),
                            ("Users", "users"), ("DeletedFaces", "deleted"), ("CollectionIds", "collections"),
                            ("UnmatchedFaces", "unmatched"), ("AssociatedFaces", "associated")):
            value = response.get(name)
            if isinstance(value, list):
                facts.result[count] = facts.result.get(count, 0) + len(value)
        if "SearchedFaceBoundingBox" in response or "SourceImageFace" in response:
            facts.result.setdefault("faces", 1)
    if not facts.matches:
        for match in response.get("FaceMatches") or []:
            face = match.get("Face") or {}
            entry = {"FaceId": face["FaceId"]} if "FaceId" in face else {}
            facts.matches.append({**entry, "Similarity": match.get("Similarity")})
        for match in response.get("UserMatches") or []:
            facts.matches.append({"UserId": (match.get("User") or {}).get("UserId"),
                                  "Similarity": match.get("Similarity")})


def request_record(*, key: AccessKey | None, request_id: str, at: datetime | None, facts: Facts | None,
                   operation: str | None, status: int, error: str | None, reason: str | None) -> dict[str, Any]:
    """The record of one request whose signature was verified, allowed or refused."""
    facts = facts or Facts(operation=operation)
    review = None
    if facts.review_item is not None or facts.review_outcome is not None:
        review = {"item": facts.review_item, "outcome": facts.review_outcome}
    return {
        "kind": "request", "time": utc_time(at), "request_id": request_id, "key": key_fields(key),
        "operation": facts.operation or operation, "collection": facts.collection, "policy": facts.policy,
        "parameters": dict(facts.parameters), "purpose": facts.purpose, "case": facts.case,
        "image_sha256": list(facts.image_sha256), "status": status, "error": error, "reason": reason,
        "result": dict(facts.result), "matches": list(facts.matches), "review": review,
    }


# ------------------------------------------------------------------ signing key and checkpoints


def _load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The log's signing key, created once (atomically: the first of several processes wins)."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made one meanwhile: use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SearchLogError(f"{path} is accessible to other users (mode {mode:04o}): anyone who read it can "
                             f"sign checkpoints. Run 'chmod 600 {path}'")
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SearchLogError(f"{path} does not hold an Ed25519 private key")
    return loaded


def _public_raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _public_key(encoded: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
    except (ValueError, TypeError) as error:
        raise SearchLogError(f"not an Ed25519 public key (base64 of 32 bytes): {error}") from None


def _signature_ok(checkpoint: Mapping[str, Any], public: Ed25519PublicKey) -> bool:
    statement = checkpoint.get("statement")
    signature = checkpoint.get("signature")
    if not isinstance(statement, dict) or not isinstance(signature, str):
        return False
    try:
        public.verify(base64.b64decode(signature, validate=True), canonical(statement).encode("utf-8"))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint file written by ``faceaudit log checkpoint``: {statement, signature, public_key}."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SearchLogError(f"cannot read checkpoint file {path}: {error}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT or \
            not isinstance(data.get("statement"), dict):
        raise SearchLogError(f"{path} is not a faceaudit search log checkpoint")
    return data


# ------------------------------------------------------------------ verification


@dataclass(frozen=True)
class Problem:
    """The first place the log stops being the one that was written."""

    seq: int  # the first record that is not as written (or missing)
    what: str  # edited, deleted, inserted, reordered, truncated, rewritten, signature, key
    message: str
    position: int | None = None  # 1-based place in the stored order, when there is one


@dataclass
class Verification:
    records: int = 0
    head_seq: int = 0
    head_hash: str = ZERO_HASH
    checkpoints: int = 0  # checkpoints whose signature and hash were checked
    problem: Problem | None = None
    log_id: str | None = None
    key_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "checkpoints_checked": self.checkpoints, "log_id": self.log_id, "key_id": self.key_id,
                "problem": None if self.problem is None else {
                    "seq": self.problem.seq, "what": self.problem.what, "message": self.problem.message,
                    "position": self.problem.position}}


@dataclass
class _Seen:
    """What verification keeps of one stored record (not its text: logs can be long)."""

    seq: int | None
    prev: str | None
    hash: str | None
    intact: bool  # its hash matches its contents


def _seen(text: str) -> _Seen:
    try:
        record = json.loads(text)
    except ValueError:
        return _Seen(None, None, None, False)
    if not isinstance(record, dict):
        return _Seen(None, None, None, False)
    seq = record.get("seq")
    intact = isinstance(record.get("hash"), str) and (_hashed_as_stored(text, record)
                                                      or record_hash(record) == record["hash"])
    return _Seen(seq if isinstance(seq, int) else None, record.get("prev"), record.get("hash"), intact)


def _hashed_as_stored(text: str, record: Mapping[str, Any]) -> bool:
    """True when ``text`` is the canonical JSON that was hashed with its ``hash`` member added, checked
    without re-encoding (most of verification's time): SHA-256 over ``prev`` and the text minus that
    member. A match means the text is exactly what was hashed; anything else (another spacing, a
    nested "hash") is left to :func:`record_hash`."""
    body = text.replace(',"hash":' + json.dumps(record["hash"]), "", 1)  # "hash" is never the first key
    return body != text and \
        hashlib.sha256((str(record.get("prev")) + body).encode("utf-8")).hexdigest() == record["hash"]


def _chain_problem(seen: list[_Seen], wanted: set[int], hashes: dict[int, str]
                   ) -> tuple[Problem | None, int, str]:
    """Walk the records in stored order; the first break, the verified head, and the hashes and
    Merkle tree roots at ``wanted`` (``hashes[seq]``, ``hashes[-seq]``)."""
    where: dict[int, list[int]] = {}
    for position, s in enumerate(seen):
        if s.seq is not None:
            where.setdefault(s.seq, []).append(position)
    expected, prev, before = 1, ZERO_HASH, ZERO_HASH
    accepted: list[int] = []  # the position each accepted record was found at, by seq - 1
    frontier: list[tuple[int, bytes]] = []
    for i, s in enumerate(seen):
        if s.intact and s.seq == expected and s.prev == prev:
            frontier_push(frontier, leaf_hash(str(s.hash)))
            if expected in wanted:
                hashes[expected] = str(s.hash)
                hashes[-expected] = frontier_root(frontier).hex()
            accepted.append(i)
            expected, prev, before = expected + 1, str(s.hash), prev
            continue
        position = i + 1
        following = seen[i + 1] if i + 1 < len(seen) else None
        # A genuine record that is only out of place (its seq is unique and later) is reordered, not extra.
        displaced = s.intact and s.seq is not None and s.seq > expected and len(where.get(s.seq, [])) == 1
        if following is not None and following.intact and following.seq == expected and following.prev == prev \
                and not displaced:
            claimed = f" (claiming seq {s.seq})" if s.seq is not None else ""
            return Problem(expected, "inserted", f"a record{claimed} was inserted before record {expected}, "
                                                 f"at position {position}", position), expected - 1, prev
        if not s.intact:
            return Problem(expected, "edited", f"record {expected} (position {position}) was edited: its "
                                               "contents no longer match its hash", position), expected - 1, prev
        if s.seq == expected:  # intact and in place, but chained to something else
            if expected == 1:
                return Problem(1, "edited", "record 1 does not start the chain (its prev is not 64 zeros)",
                               position), 0, prev
            return Problem(expected - 1, "edited",
                           f"record {expected - 1} (position {position - 1}) was altered and its hash "
                           f"recomputed: record {expected} chained to a different hash",
                           position - 1), expected - 2, before
        if s.intact and s.seq is not None and s.seq < expected:
            # Two records claim one seq: the one the next record chains to is the one written.
            if following is not None and following.prev == s.hash:
                first = accepted[s.seq - 1] + 1
                message = (f"two records claim seq {s.seq} (positions {first} and {position}); the chain goes "
                           f"on from the second, so the one at position {first} was inserted")
                return Problem(s.seq, "inserted", message, first), s.seq - 1, str(s.prev)
        later = [p for p in where.get(expected, []) if p > i]
        if later:
            return Problem(expected, "reordered", f"record {expected} is out of order: position {position} "
                                                  f"holds record {s.seq}, record {expected} is at position "
                                                  f"{later[0] + 1}", position), expected - 1, prev
        if s.seq is not None and s.seq < expected:
            return Problem(expected, "inserted", f"a second record {s.seq} was inserted at position {position}, "
                                                 f"before record {expected}", position), expected - 1, prev
        if s.seq is not None and s.seq > expected:
            gone = f"record {expected}" if s.seq == expected + 1 else f"records {expected} to {s.seq - 1}"
            return Problem(expected, "deleted", f"{gone} deleted: record {expected - 1} is followed by record "
                                                f"{s.seq} (position {position})", position), expected - 1, prev
        return Problem(expected, "edited", f"record {expected} (position {position}) was edited: its sequence "
                                           "number is missing", position), expected - 1, prev
    return None, expected - 1, prev


def verify(record_texts: Iterable[str], checkpoints: Iterable[Mapping[str, Any]] = (), *,
           public_key: str | None = None, kept: Mapping[str, Any] | None = None,
           log_id: str | None = None, public_keys: Mapping[str, str] | None = None) -> Verification:
    """Check a log's records (stored texts, in stored order) and its checkpoints.

    ``checkpoints``: the log's own, each signed with the key its statement's ``key_id`` names:
    ``public_key`` (base64 raw Ed25519, this data directory's) or one of ``public_keys`` (key
    id -> base64: the keys of every host writing the log); ``kept``: a checkpoint an overseer
    kept (with the public key it was signed with), which also detects a truncated or rewritten
    tail. Returns the first problem found, by record number.
    """
    result = Verification(log_id=log_id)
    stored = list(checkpoints)
    candidates: list[tuple[Mapping[str, Any], Ed25519PublicKey | None, str]] = []
    own = _public_key(public_key) if public_key else None
    keys: dict[str, Ed25519PublicKey] = {}
    for encoded in (public_keys or {}).values():
        listed = _public_key(encoded)
        keys[_key_id(_public_raw(listed))] = listed  # by the id its bytes give, not the id it was filed under
    if own is not None:
        result.key_id = _key_id(_public_raw(own))
        keys[result.key_id] = own
    for cp in stored:
        statement = cp.get("statement")
        named = statement.get("key_id") if isinstance(statement, dict) else None
        signer = keys.get(named) if isinstance(named, str) else None
        if signer is None and named is None:  # a checkpoint naming no key: this directory's
            signer = own
        candidates.append((cp, signer, "the log's checkpoint"))
    if kept is not None:
        candidates.append((kept, _public_key(str(kept.get("public_key"))), "the kept checkpoint"))
    wanted = {int(cp["statement"]["seq"]) for cp, _, _ in candidates
              if isinstance(cp.get("statement"), dict) and isinstance(cp["statement"].get("seq"), int)}
    hashes: dict[int, str] = {}
    seen = [_seen(text) for text in record_texts]
    result.records = len(seen)
    chain, head, head_hash = _chain_problem(seen, wanted, hashes)
    result.head_seq, result.head_hash = head, head_hash
    problems: list[Problem] = [chain] if chain else []
    if kept is not None and keys and _key_id(_public_raw(_public_key(str(kept.get("public_key"))))) not in keys:
        problems.append(Problem(1, "key", "the log's signing key is not the one that signed the kept checkpoint: "
                                          "the log (or its key) was replaced"))
    checked: list[tuple[int, str, bool, str]] = []  # seq, signed time, matches the chain, label
    for cp, key, label in candidates:
        statement = cp.get("statement")
        if not isinstance(statement, dict) or not isinstance(statement.get("seq"), int) or key is None \
                or not _signature_ok(cp, key):
            seq = statement.get("seq") if isinstance(statement, dict) else None
            problems.append(Problem(seq if isinstance(seq, int) and seq > 0 else 1, "signature",
                                    f"{label} is not validly signed"
                                    + ("" if key is not None else " (the log lists no key of the id it names, "
                                                                  "or its signing key is missing)")))
            continue
        if log_id is not None and statement.get("log_id") != log_id:
            problems.append(Problem(1, "key", f"{label} belongs to another log ({statement.get('log_id')})"))
            continue
        seq = statement["seq"]
        if chain is not None and seq > head:
            continue  # beyond the first break: nothing more to say about it
        result.checkpoints += 1
        if seq > head:
            problems.append(Problem(head + 1, "truncated",
                                    f"the log ends at record {head}, but {label} (signed {statement.get('time')}) "
                                    f"covers record {seq}: records {head + 1} to {seq} were removed"))
            continue
        root = statement.get("tree_root")
        same = seq == 0 or (hashes.get(seq) == statement.get("hash") and (root is None or hashes.get(-seq) == root))
        checked.append((seq, str(statement.get("time")), same, label))
    for seq, signed, matches, label in checked:
        if matches:
            continue
        # The rewrite began after the last checkpoint signed before this one that still matches
        # (later ones may have been signed by whoever rewrote the log: it holds the key).
        good = max([s for s, t, ok, _ in checked if ok and s < seq and t <= signed], default=0)
        problems.append(Problem(good + 1, "rewritten",
                                f"record {seq} differs from {label} (signed {signed}): the log was rewritten "
                                f"from a record between {good + 1} and {seq} on (checkpoints signed before "
                                f"it still vouch for records 1 to {good})"))
    if problems:
        result.problem = min(problems, key=lambda p: p.seq)
    return result


# ------------------------------------------------------------------ the log


@dataclass
class _Waiting:
    """One append waiting for its transaction."""

    body: dict[str, Any]
    stored: dict[str, Any] | None = None
    error: str | None = None
    cause: BaseException | None = None
    done: bool = False


@dataclass
class _Refused:
    counts: Counter = field(default_factory=Counter)
    since: float | None = None  # time.time() of the first uncounted refusal
    last_flush: float = field(default_factory=time.monotonic)
    flush_asked: bool = False  # note_refused has said "flush now" since the last flush


class SearchLog(SqlStore):
    """The Recorder of PLAN.md over ``DATA_DIR/searchlog.db``: ``append(record)`` -> stored record.

    ``database``: a postgresql:// URL (the server's ``--database``): the log's tables are there,
    one chain for every server on that database; the signing key stays in ``data_dir``.

    Safe for many threads (writes behind a lock: appends serialize on the write lock
    anyway) and many processes on one data directory (SQLite's lock) or one database (its
    advisory lock). ``close()`` writes the pending refused-request counts and a checkpoint of the head.
    """

    def __init__(self, data_dir: str | os.PathLike, *, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
                 refused_interval: float = DEFAULT_REFUSED_INTERVAL, create: bool = True,
                 database: str | None = None):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        if not create:
            if database:
                if not _postgres_log_exists(database):
                    raise SearchLogError("no search log in the PostgreSQL database (no searchlog_records table)")
            elif not self.path.exists():
                raise SearchLogError(f"no search log in {self.data_dir} (no {DB_FILENAME})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.checkpoint_seconds = float(checkpoint_seconds)
        self.refused_interval = float(refused_interval)
        self._signing = _load_or_create_key(self.data_dir / KEY_FILENAME)
        self._public_raw = _public_raw(self._signing.public_key())
        self.key_id = _key_id(self._public_raw)
        self._lock = threading.Lock()  # the connection
        self._batch = threading.Condition()  # the queue of records waiting for the next transaction
        self._queue: list[_Waiting] = []
        self._writing = False
        self.transactions = 0  # append transactions committed by this process (each one flush)
        self._refused_lock = threading.Lock()
        self._refused = _Refused()
        self._closed = False
        try:
            super().__init__(_open_log_database(self.data_dir, database))
        except Exception as error:
            if isinstance(error, SearchLogError):
                raise
            raise SearchLogError(f"cannot open the search log {self.path}: {error}") from error
        self.describe = self._db.describe
        try:
            with self._db.write() as conn:  # this directory's key signs; every verifier must find it
                self.log_id = str(conn.execute("SELECT value FROM searchlog_meta WHERE name = 'log_id'")
                                  .fetchone()[0])
                conn.execute("INSERT INTO searchlog_keys (key_id, public_key, added_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (key_id) DO NOTHING", (self.key_id, self.public_key, time.time()))
        except self._db.errors as error:
            self._db.close()
            raise SearchLogError(f"cannot open the search log {self.describe}: {error}") from error

    # -- the public key and what an overseer keeps

    @property
    def public_key(self) -> str:
        """The checkpoints' Ed25519 public key, base64 of its 32 raw bytes."""
        return base64.b64encode(self._public_raw).decode("ascii")

    def public_key_pem(self) -> str:
        return self._signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    def derive_secret(self, purpose: str) -> bytes:
        """32 bytes for ``purpose`` (e.g. the MAC of the log listing's NextTokens) that every process
        holding this log's signing key derives alike, and nobody without it can."""
        raw = self._signing.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())
        return hmac.new(raw, f"faceaudit-searchlog-derived:{purpose}".encode(), hashlib.sha256).digest()

    def _sign(self, seq: int, hash_: str, tree_root: str) -> dict[str, Any]:
        statement = {"log_id": self.log_id, "seq": seq, "hash": hash_, "tree_root": tree_root, "time": utc_time(),
                     "key_id": self.key_id}
        signature = self._signing.sign(canonical(statement).encode("utf-8"))
        return {"statement": statement, "signature": base64.b64encode(signature).decode("ascii")}

    # -- writing

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Add ``record`` to the chain; returns it as stored (with seq, prev, hash), durable on disk.

        Raises ValueError for a record that is not one (unknown kind or field, not JSON), and
        SearchLogError when it could not be written: the caller must not answer as if logged.

        Group commit: threads appending while a transaction is being flushed queue up, and the
        next of them writes the whole queue in one transaction, one flush for all (each still
        returns only once its own record is on disk).
        """
        ticket = _Waiting(_normalized(record))
        with self._batch:
            self._queue.append(ticket)
            while self._writing and not ticket.done:
                self._batch.wait()
            batch: list[_Waiting] | None = None
            if not ticket.done:
                self._writing = True
                batch, self._queue = self._queue, []
        if batch is not None:
            try:
                self._write_batch(batch)
            finally:
                with self._batch:
                    self._writing = False
                    self._batch.notify_all()
        if ticket.stored is None:  # the cause stays attached: a full disk must read as one
            raise SearchLogError(ticket.error or "the search log could not be written") from ticket.cause
        return ticket.stored

    def _write_batch(self, batch: list[_Waiting]) -> None:
        refused: dict[str, Any] | None = None
        try:
            with self._lock:
                if self._closed:
                    raise SearchLogError("the search log is closed")
                with self._db.write() as conn:
                    refused = self._take_refused(force=False)
                    stored = self._chain(conn, [ticket.body for ticket in batch] if refused is None
                                         else [refused, *(ticket.body for ticket in batch)])
                    stored = stored[len(stored) - len(batch):]
                self.transactions += 1
        except Exception as error:  # nothing of the batch was written: every caller hears why
            if refused is not None:
                self._return_refused(refused)
            problem = str(error) if isinstance(error, SearchLogError) else \
                f"the search log {self.describe} could not be written: {type(error).__name__}: {error}"
            for ticket in batch:
                ticket.error, ticket.cause, ticket.done = problem, error, True
            return
        for ticket, record in zip(batch, stored):
            ticket.stored, ticket.done = record, True

    def _chain(self, conn: Connection, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append ``bodies`` to the chain inside the write transaction ``conn`` (and sign a checkpoint
        when one is due); returns them as stored. One statement reads the head and the last
        checkpoint, one inserts every record: with PostgreSQL each statement is a round trip."""
        seq, prev, last_seq, last_at = conn.execute(
            "SELECT r.seq, r.hash, c.seq, c.at FROM (SELECT 1 AS one) o "
            "LEFT JOIN (SELECT seq, hash FROM searchlog_records ORDER BY seq DESC LIMIT 1) r ON 1 = 1 "
            "LEFT JOIN (SELECT seq, at FROM searchlog_checkpoints ORDER BY seq DESC LIMIT 1) c ON 1 = 1").fetchone()
        seq, prev = (seq or 0, prev or ZERO_HASH)
        stored: list[dict[str, Any]] = []
        for body in bodies:
            seq += 1
            record = {**body, "seq": seq, "prev": prev}
            record["hash"] = prev = record_hash(record)
            stored.append(record)
        conn.executemany("INSERT INTO searchlog_records (seq, hash, record) VALUES (?, ?, ?)",
                         [(r["seq"], r["hash"], canonical(r)) for r in stored])
        if seq - (last_seq or 0) >= self.checkpoint_every or time.time() - (last_at or 0.0) >= self.checkpoint_seconds:
            self._store_checkpoint(conn, seq, prev)
        return stored

    def _store_checkpoint(self, conn: Connection, seq: int, hash_: str) -> dict[str, Any]:
        last = conn.execute("SELECT seq, frontier FROM searchlog_checkpoints WHERE seq <= ? "
                            "ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()
        frontier = [(size, bytes.fromhex(node)) for size, node in json.loads(last[1])] if last else []
        for (record_hash_hex,) in conn.execute("SELECT hash FROM searchlog_records WHERE seq > ? AND seq <= ? "
                                               "ORDER BY seq", (last[0] if last else 0, seq)):
            frontier_push(frontier, leaf_hash(record_hash_hex))
        checkpoint = self._sign(seq, hash_, frontier_root(frontier).hex())
        conn.execute("INSERT INTO searchlog_checkpoints (seq, at, checkpoint, frontier) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (seq) DO UPDATE SET at = excluded.at, checkpoint = excluded.checkpoint, "
                     "frontier = excluded.frontier",
                     (seq, time.time(), canonical(checkpoint), canonical([[n, h.hex()] for n, h in frontier])))
        return checkpoint

    def checkpoint(self) -> dict[str, Any]:
        """Sign the head now (stored too); the file an overseer keeps: statement, signature, public key."""
        with self._lock:
            try:
                with self._db.write() as conn:
                    head = conn.execute("SELECT seq, hash FROM searchlog_records ORDER BY seq DESC LIMIT 1"
                                        ).fetchone()
                    seq, hash_ = head if head else (0, ZERO_HASH)
                    checkpoint = self._store_checkpoint(conn, seq, hash_)
            except self._db.errors as error:
                raise SearchLogError(f"the search log {self.describe} could not be written: {error}") from error
        return {"format": CHECKPOINT_FORMAT, **checkpoint, "public_key": self.public_key}

    # -- requests refused before their signature was verified

    def note_refused(self, error: str | None) -> bool:
        """Count one unauthenticated refusal (no disk write); True when the counts are due to be
        written (call :meth:`flush_refused` off the event loop then)."""
        with self._refused_lock:
            refused = self._refused
            if refused.since is None:
                refused.since = time.time()
            refused.counts[error or "unknown"] += 1
            if refused.flush_asked or time.monotonic() - refused.last_flush < self.refused_interval:
                return False
            refused.flush_asked = True  # once: a flood must not queue a flush per request
            return True

    def _take_refused(self, *, force: bool) -> dict[str, Any] | None:
        with self._refused_lock:
            refused = self._refused
            if not refused.counts or (not force and time.monotonic() - refused.last_flush < self.refused_interval):
                return None
            self._refused = _Refused()
        total = sum(refused.counts.values())
        return _normalized({
            "kind": "unauthenticated", "status": None, "result": {"refused": total},
            "details": {"since": utc_time(datetime.fromtimestamp(refused.since or time.time(), UTC)),
                        "until": utc_time(), "by_error": dict(sorted(refused.counts.items()))}})

    def _return_refused(self, record: Mapping[str, Any]) -> None:
        with self._refused_lock:
            self._refused.counts.update(record["details"]["by_error"])

    def flush_refused(self, *, force: bool = False) -> dict[str, Any] | None:
        """Write the pending unauthenticated counts as one record now (if due, or ``force``)."""
        with self._lock:
            if self._closed:
                return None
            refused = self._take_refused(force=force)
            if refused is None:
                return None
            try:
                with self._db.write() as conn:
                    [stored] = self._chain(conn, [refused])
            except self._db.errors as error:
                self._return_refused(refused)
                raise SearchLogError(f"the search log {self.describe} could not be written: {error}") from error
        return stored

    # -- reading

    def newest_texts(self, *, below: int | None = None, containing: Sequence[str] = (),
                     batch: int = 100) -> Iterator[tuple[int, str]]:
        """(seq, stored text) of the records with a seq below ``below`` (None: every record), newest
        first, whose text contains each string of ``containing`` (tested by the database: the other
        texts are never read out of it).

        Read in statements of ``batch`` records, then more each time (up to MAX_READ_BATCH), so a
        caller that stops early reads little. Each statement continues below the last seq read, and
        records are only ever appended (above the head), so the statements agree with one another
        while the log grows."""
        where = [_CONTAINS[self._db.flavour]] * len(containing)
        size = max(1, int(batch))
        while True:
            bound = [] if below is None else ["seq < ?"]
            sql = ("SELECT seq, record FROM searchlog_records"
                   + (" WHERE " + " AND ".join(where + bound) if where or bound else "")
                   + " ORDER BY seq DESC LIMIT ?")
            try:
                rows = self._db.rows(sql, [*containing, *([] if below is None else [below]), size])
            except self._db.errors as error:
                raise SearchLogError(f"the search log {self.describe} could not be read: {error}") from error
            for seq, text in rows:
                yield int(seq), str(text)
            if len(rows) < size:
                return
            below = int(rows[-1][0])
            size = min(size * 4, MAX_READ_BATCH)

    def snapshot(self) -> tuple[list[str], list[dict[str, Any]]]:
        """(record texts, checkpoints), read in one transaction so they agree."""
        contents = self.contents()
        return contents.texts, contents.checkpoints

    def contents(self) -> LogContents:
        """The whole log as stored (records, checkpoints, every signing key), in one snapshot."""
        try:
            texts, checkpoints, keys = _read_tables(self._db)
        except self._db.errors as error:
            raise SearchLogError(f"the search log {self.describe} could not be read: {error}") from error
        return LogContents(self.log_id, self.public_key, checkpoints, texts, str(self.data_dir), keys)

    def verify(self, kept: Mapping[str, Any] | None = None) -> Verification:
        return self.contents().verify(kept)

    def export(self, out: str | os.PathLike) -> int:
        """Write everything needed to verify offline (see :meth:`LogContents.export`)."""
        return self.contents().export(out)

    def close(self) -> None:
        """Write the pending refusal counts and a checkpoint of the head; idempotent."""
        if self._closed:
            return
        try:
            self.flush_refused(force=True)
            with self._lock, self._db.write() as conn:
                head = conn.execute("SELECT seq, hash FROM searchlog_records ORDER BY seq DESC LIMIT 1").fetchone()
                last = conn.execute("SELECT MAX(seq) FROM searchlog_checkpoints").fetchone()[0] or 0
                if head and head[0] > last:
                    self._store_checkpoint(conn, head[0], head[1])
        finally:
            with self._lock:
                self._closed = True
                self._db.close()


@dataclass
class LogContents:
    """A log as read for checking or reporting: from a data directory or from an export."""

    log_id: str | None
    public_key: str | None  # this data directory's; None: its signing key is missing
    checkpoints: list[dict[str, Any]]
    texts: list[str]
    source: str
    public_keys: dict[str, str] = field(default_factory=dict)  # key id -> base64, every key that signs

    def verify(self, kept: Mapping[str, Any] | None = None) -> Verification:
        return verify(self.texts, self.checkpoints, public_key=self.public_key, kept=kept, log_id=self.log_id,
                      public_keys=self.public_keys)

    def export(self, out: str | os.PathLike) -> int:
        """Write a header line (log id, public keys, checkpoints), then each record exactly as stored,
        one per line; returns the number of records. Written whole or not at all (temporary file)."""
        header = {"format": EXPORT_FORMAT, "version": 1, "log_id": self.log_id, "public_key": self.public_key,
                  "public_keys": dict(self.public_keys),
                  "exported": utc_time(), "records": len(self.texts), "checkpoints": self.checkpoints}
        target = Path(out)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(canonical(header) + "\n")
            for text in self.texts:
                handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return len(self.texts)

    def _verified_leaves(self, *kept: Mapping[str, Any]) -> list[bytes]:
        for checkpoint in kept:
            verification = self.verify(checkpoint)
            if verification.problem is not None:
                raise SearchLogError(f"the log does not verify against the checkpoint of record "
                                     f"{checkpoint['statement']['seq']}: {verification.problem.message}")
        return [leaf_hash(str(record["hash"])) for record in self.records()]

    def inclusion(self, seq: int, kept: Mapping[str, Any]) -> dict[str, Any]:
        """Proof that record ``seq`` is in the tree the kept checkpoint signed (record included)."""
        size = int(kept["statement"]["seq"])
        if not 1 <= seq <= size:
            raise SearchLogError(f"record {seq} is not covered by the checkpoint of records 1 to {size}")
        leaves = self._verified_leaves(kept)[:size]
        return {"format": INCLUSION_FORMAT, "log_id": self.log_id, "seq": seq, "record": self.records()[seq - 1],
                "tree_size": size, "tree_root": kept["statement"].get("tree_root"),
                "proof": [node.hex() for node in inclusion_proof(leaves, seq - 1)]}

    def consistency(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
        """Proof that the log of the ``new`` checkpoint extends that of the ``old`` one."""
        m, n = int(old["statement"]["seq"]), int(new["statement"]["seq"])
        if not 1 <= m <= n:
            raise SearchLogError(f"no consistency proof from {m} records to {n}")
        leaves = self._verified_leaves(old, new)[:n]
        return {"format": CONSISTENCY_FORMAT, "log_id": self.log_id, "from_size": m, "to_size": n,
                "from_root": old["statement"].get("tree_root"), "to_root": new["statement"].get("tree_root"),
                "proof": [node.hex() for node in consistency_proof(leaves, m)]}

    def records(self) -> list[dict[str, Any]]:
        """The records that parse (verify first to know they are the ones written)."""
        parsed = []
        for text in self.texts:
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                parsed.append(record)
        return parsed


def read_export(path: str | os.PathLike) -> LogContents:
    """An export written by :meth:`SearchLog.export` (``faceaudit log export``)."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read().split(b"\n")
    except OSError as error:
        raise SearchLogError(f"cannot read export {path}: {error}") from None
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise SearchLogError(f"{path} is not a faceaudit search log export")
    if lines[-1] == b"":
        lines.pop()
    texts = [line.decode("utf-8", errors="replace") for line in lines[1:]]
    keys = header.get("public_keys")
    return LogContents(header.get("log_id"), header.get("public_key"), list(header.get("checkpoints") or []),
                       texts, str(path), dict(keys) if isinstance(keys, dict) else {})


def _read_tables(db: Database) -> tuple[list[str], list[dict[str, Any]], dict[str, str]]:
    """(record texts, checkpoints, signing keys) of the log's tables, in one snapshot."""
    with db.snapshot() as conn:
        texts = [row[0] for row in conn.execute("SELECT record FROM searchlog_records ORDER BY seq")]
        checkpoints = [_parsed_checkpoint(row[0])
                       for row in conn.execute("SELECT checkpoint FROM searchlog_checkpoints ORDER BY seq")]
        keys = dict(conn.execute("SELECT key_id, public_key FROM searchlog_keys ORDER BY key_id").fetchall())
    return texts, checkpoints, keys


def read_data_dir(data_dir: str | os.PathLike, database: str | None = None) -> LogContents:
    """The live log of a data directory (or of the PostgreSQL ``database`` its server uses), read in
    one snapshot. It writes nothing but, for a log of an older faceaudit, the schema upgrade."""
    data_dir = Path(data_dir)
    path = data_dir / DB_FILENAME
    if database:
        if not data_dir.is_dir():
            raise SearchLogError(f"no search log: {data_dir} is not a data directory")
        if not _postgres_log_exists(database):
            raise SearchLogError("no search log in the PostgreSQL database (no searchlog_records table)")
    elif not path.is_file():
        raise SearchLogError(f"no search log in {data_dir} (no {DB_FILENAME})")
    public_key = None
    key_path = data_dir / KEY_FILENAME
    if key_path.is_file():
        try:
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as error:
            raise SearchLogError(f"cannot read the signing key {key_path}: {error}") from None
        if isinstance(loaded, Ed25519PrivateKey):
            public_key = base64.b64encode(_public_raw(loaded.public_key())).decode("ascii")
    db = _open_log_database(data_dir, database)
    try:
        meta = dict(db.rows("SELECT name, value FROM searchlog_meta"))
        texts, checkpoints, keys = _read_tables(db)
    except db.errors as error:
        raise SearchLogError(f"cannot read the search log {db.describe}: {error}") from None
    finally:
        db.close()
    return LogContents(meta.get("log_id"), public_key, checkpoints, texts, str(data_dir), keys)


def _parsed_checkpoint(text: str) -> dict[str, Any]:
    try:
        checkpoint = json.loads(text)
    except ValueError:
        return {"statement": None, "signature": None}
    return checkpoint if isinstance(checkpoint, dict) else {"statement": None, "signature": None}


def _signed_root(checkpoint: Mapping[str, Any], what: str) -> tuple[int, bytes]:
    """(size, tree root) of a kept checkpoint whose signature verifies with its own public key."""
    if not _signature_ok(checkpoint, _public_key(str(checkpoint.get("public_key")))):
        raise SearchLogError(f"{what} is not validly signed")
    statement = checkpoint["statement"]
    if not isinstance(statement.get("tree_root"), str):
        raise SearchLogError(f"{what} carries no Merkle tree root")
    return int(statement["seq"]), bytes.fromhex(statement["tree_root"])


def check_inclusion(proof: Mapping[str, Any], kept: Mapping[str, Any]) -> str | None:
    """None when ``proof`` shows its record is in the log the kept checkpoint covers; else why not."""
    try:
        size, root = _signed_root(kept, "the checkpoint")
        record = proof["record"]
        nodes = [bytes.fromhex(node) for node in proof["proof"]]
        seq = int(proof["seq"])
    except (SearchLogError, KeyError, TypeError, ValueError) as error:
        return f"not a usable proof: {error}"
    if not isinstance(record, dict) or record.get("seq") != seq or record_hash(record) != record.get("hash"):
        return f"the record in the proof is not record {seq} as it was hashed (edited)"
    if proof.get("tree_size") != size:
        return f"the proof is for a tree of {proof.get('tree_size')} records, the checkpoint covers {size}"
    if not verify_inclusion(leaf_hash(str(record["hash"])), seq - 1, size, nodes, root):
        return f"record {seq} is not in the log the checkpoint covers (the proof does not lead to its tree root)"
    return None


def check_consistency(proof: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """None when ``proof`` shows the ``new`` checkpoint's log extends the ``old`` one's; else why not."""
    try:
        m, old_root = _signed_root(old, "the earlier checkpoint")
        n, new_root = _signed_root(new, "the later checkpoint")
        nodes = [bytes.fromhex(node) for node in proof["proof"]]
    except (SearchLogError, KeyError, TypeError, ValueError) as error:
        return f"not a usable proof: {error}"
    if old["statement"].get("log_id") != new["statement"].get("log_id"):
        return "the two checkpoints are of different logs"
    if (proof.get("from_size"), proof.get("to_size")) != (m, n):
        return f"the proof is from {proof.get('from_size')} to {proof.get('to_size')} records, not {m} to {n}"
    if not verify_consistency(m, n, old_root, new_root, nodes):
        return (f"the log of {n} records does not extend the one of {m}: records up to {m} were changed, "
                "dropped or reordered since")
    return None
