"""PostgresStore: the FaceStore on PostgreSQL with pgvector, for several servers on one database.

Same semantics, limits, errors and exact answers as faceaudit.storage.embedded; what
differs is where the vectors are searched and how writers are kept apart.

Why psycopg 3 (with psycopg_pool)
---------------------------------
It is the maintained PostgreSQL driver for Python (psycopg2 gets fixes only), installs
from PyPI as a binary wheel (``psycopg[binary]``, libpq inside), is synchronous - the
store runs on the server's worker threads, not on its event loop, so asyncpg's
asyncio-only API would need a loop per thread - and has a real connection pool. The
pool is sized to the server's request threads (``pool_size``): a thread never waits
for a connection another thread holds, and N server processes hold at most N x
pool_size connections.

Layout
------
Tables ``collections``, ``users``, ``faces`` (one row per face with its vector in a
pgvector ``vector`` column) and ``meta`` (the NextToken secret), in the connection's
schema (``schema=`` sets search_path, so one database can hold several stores, as the
tests do). The schema comes from faceaudit.storage.migrations: versioned, applied at
start under an advisory lock (two servers starting at once migrate once), refused when
the database is newer than this code.

A vector column without a fixed dimension holds any model's vectors; each collection
fixes its dimension with its first face (as in the embedded store), and that same
transaction creates the collection's HNSW index: a *partial expression* index
``USING hnsw ((embedding::vector(DIM)) vector_l2_ops) WHERE collection = ID`` - the
pattern pgvector documents for rows of several dimensions - on the Euclidean distance
the store's searches use.

Transactions and crash guarantees
---------------------------------
Every write is one transaction (READ COMMITTED) that first locks its collection's row
(``SELECT ... FOR UPDATE``): writes to one collection are serialised, whichever server
sends them, so face_count always equals the number of face rows, the quotas cannot be
overshot by two servers at once, and face ``seq`` numbers are handed out in commit order
within a collection (the pagination guarantee relies on that). A crash at any moment
leaves each write entirely applied or entirely absent (PostgreSQL's WAL); with the
server's default ``synchronous_commit = on`` an acknowledged write survives a power cut.
Reads run in REPEATABLE READ READ ONLY transactions: a search, and the records it
returns, come from one snapshot. Nothing is cached in the process, so a write through
one server is seen by every other on its next request.

Exact search, identical to the embedded store's
-----------------------------------------------
pgvector's ``<->`` sums squared differences in float32, so its order can differ from
the exact one for near ties. A search therefore asks PostgreSQL for *candidates*: every
row within the float32 error bound (``_relative_error``) of the k-th smallest pgvector
distance (and of the radius); PostgreSQL scans the collection's rows with the
collection index (sequentially, never the HNSW index). The candidates' vectors are then
ranked by faceaudit.storage.vector_index.ExactIndex - the very code the embedded store
searches with - so distances, ties and cuts are the same to the last bit.

Approximate search (opt-in)
---------------------------
``approximate_above=N``: a collection with more than N faces is searched through its
HNSW index, with ``hnsw.ef_search`` set from the requested MaxFaces, and the rows found
re-ranked exactly. Off by default: audits and public-safety collections need exact
search (ANN misses need not be spread evenly across groups). User search is always exact.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from faceaudit.errors import (
    ConflictException,
    InternalServerError,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from faceaudit.storage.base import (
    ASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,
    ASSOCIATE_FACE_NOT_FOUND,
    ASSOCIATE_LOW_MATCH_CONFIDENCE,
    DEFAULT_PAGE_SIZE,
    DEFAULT_USER_PAGE_SIZE,
    DELETE_ASSOCIATED_TO_AN_EXISTING_USER,
    DELETE_FACE_NOT_FOUND,
    DISASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,
    DISASSOCIATE_FACE_NOT_FOUND,
    FACE_ID_LIST_MAX,
    MAX_FACES_PER_COLLECTION,
    MAX_FACES_PER_USER,
    PAGE_SIZE_MAX,
    USER_ACTIVE,
    USER_CREATED,
    USER_FACE_ID_LIST_MAX,
    USER_PAGE_SIZE_MAX,
    AssociationResult,
    Collection,
    FaceStore,
    StoredFace,
    UnsuccessfulFace,
    User,
    as_query_vector,
    validate_collection_id,
    validate_face_id,
    validate_face_ids,
    validate_max_distance,
    validate_max_results,
    validate_new_face,
    validate_page_size,
    validate_user_id,
)
from faceaudit.storage.migrations import Step, latest_version, migrate
from faceaudit.storage.page_tokens import (
    KIND_COLLECTIONS,
    KIND_FACES,
    KIND_USERS,
    NO_FILTER,
    PageTokens,
    filter_digest,
)
from faceaudit.storage.vector_index import NO_GROUP, ExactIndex

DEFAULT_POOL_SIZE = 8
DEFAULT_CONNECT_TIMEOUT_S = 30.0
HNSW_MAX_DIM = 2000  # pgvector indexes vectors of up to 2,000 dimensions
EF_SEARCH_MIN, EF_SEARCH_MAX = 100, 1000  # pgvector's hnsw.ef_search range tops out at 1,000
# Arbitrary constant key of the advisory lock that serialises migrations (and collection
# creation: collection rowids then increase in commit order, as ListCollections pages need).
_MIGRATION_LOCK = 0x66616365  # "face"
_COLLECTIONS_LOCK = 0x66616366
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")



def _ensure_pgvector(conn) -> None:
    """pgvector, once per database, in ``public`` (a store's own schema may be dropped with
    its tables; the extension must outlive it). A clear error where it cannot be installed."""
    import psycopg

    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION vector SCHEMA public")
    except psycopg.Error as error:
        raise InternalServerError(
            "the database lacks the pgvector extension and it could not be installed "
            f"({error}); install pgvector and run 'CREATE EXTENSION vector' as a superuser") from None


_SCHEMA: list[Step] = [
    _ensure_pgvector,
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    )""",
    """CREATE TABLE collections (
        id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        collection_id      TEXT    NOT NULL UNIQUE,
        arn                TEXT    NOT NULL,
        face_model_version TEXT    NOT NULL,
        created_ms         BIGINT  NOT NULL,
        face_count         INTEGER NOT NULL DEFAULT 0 CHECK (face_count >= 0),
        user_count         INTEGER NOT NULL DEFAULT 0 CHECK (user_count >= 0),
        vector_dim         INTEGER,             -- fixed by the first face added
        exact_only         BOOLEAN NOT NULL DEFAULT false  -- set_search_mode("exact"): never approximate
    )""",
    """CREATE TABLE users (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        collection BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        user_id    TEXT   NOT NULL,
        UNIQUE (collection, user_id)
    )""",
    # seq: never reused (an identity); pagination tokens carry it.
    """CREATE TABLE faces (
        seq                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        collection                BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        face_id                   TEXT   NOT NULL,
        image_id                  TEXT   NOT NULL,
        external_image_id         TEXT,
        bbox_width                DOUBLE PRECISION NOT NULL,
        bbox_height               DOUBLE PRECISION NOT NULL,
        bbox_left                 DOUBLE PRECISION NOT NULL,
        bbox_top                  DOUBLE PRECISION NOT NULL,
        confidence                DOUBLE PRECISION NOT NULL,
        index_faces_model_version TEXT   NOT NULL,
        user_ref                  BIGINT REFERENCES users(id),
        embedding                 vector NOT NULL,
        UNIQUE (collection, face_id)
    )""",
    "CREATE INDEX faces_by_collection ON faces (collection, seq)",
    "CREATE INDEX faces_by_user ON faces (user_ref) WHERE user_ref IS NOT NULL",
    lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('token_secret', %s)",
                              (os.urandom(32),)),
]

# faceaudit.storage.migrations: version 1 creates the schema; a change is a new version.
MIGRATIONS: dict[int, list[Step]] = {1: _SCHEMA}
SCHEMA_VERSION = latest_version(MIGRATIONS)

_FACE_COLUMNS = (
    "f.seq, f.face_id, f.image_id, f.external_image_id, f.bbox_width, f.bbox_height, "
    "f.bbox_left, f.bbox_top, f.confidence, f.index_faces_model_version, u.user_id, "
    "vector_send(f.embedding), f.user_ref")
_FACE_FROM = "faces AS f LEFT JOIN users AS u ON u.id = f.user_ref"
_COLLECTION_COLUMNS = ("id, collection_id, arn, face_model_version, created_ms, face_count, "
                       "user_count, vector_dim, exact_only")


class _CollRow(NamedTuple):
    id: int
    collection_id: str
    arn: str
    face_model_version: str
    created_ms: int
    face_count: int
    user_count: int
    vector_dim: int | None
    exact_only: bool

    def to_collection(self) -> Collection:
        return Collection(
            collection_id=self.collection_id, arn=self.arn, face_model_version=self.face_model_version,
            created=datetime.fromtimestamp(self.created_ms / 1000.0, tz=UTC),
            face_count=self.face_count, user_count=self.user_count)


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form of a float32 vector, exact: each value's shortest round-trip text."""
    return "[" + ",".join(map(str, np.asarray(vector, dtype=np.float32))) + "]"


def _vector_from_send(data: bytes) -> np.ndarray:
    """vector_send's binary form (int16 dim, int16 unused, big-endian float32s) as float32."""
    dim = int.from_bytes(data[:2], "big")
    vector = np.frombuffer(data, dtype=">f4", count=dim, offset=4)
    return vector.astype(np.float32)


def _face_from_row(row) -> StoredFace:
    (_, face_id, image_id, external_image_id, width, height, left, top, confidence,
     model_version, user_id, blob, _) = row
    return StoredFace(
        face_id=face_id, image_id=image_id, external_image_id=external_image_id,
        bounding_box={"Width": width, "Height": height, "Left": left, "Top": top},
        confidence=confidence, index_faces_model_version=model_version, user_id=user_id,
        vector=_vector_from_send(bytes(blob)))


def _relative_error(dim: int) -> float:
    """Bound on the relative error of pgvector's float32 squared distance over ``dim`` terms.

    Each term (a - b)^2 is rounded twice (difference, product) and the float32 sum adds at
    most (dim - 1) roundings, in any order: (dim + 2) u with u = 2**-24. Doubled for margin."""
    return 2.0 * (dim + 4) * 2.0 ** -24


def _candidate_factors(dim: int) -> tuple[float, float]:
    """(k-th factor, radius factor) on pgvector distances that keep every row the exact
    ranking could choose: a true k-th squared distance T is at most kth/(1-e), and a row
    with exact squared distance <= T has a pgvector one <= T (1+e)."""
    e = _relative_error(dim)
    return math.sqrt((1 + e) / (1 - e)), math.sqrt(1 + e)


def _user_status(has_faces: bool) -> str:
    return USER_ACTIVE if has_faces else USER_CREATED


def _exact_index(rows: Sequence[tuple[int, int | None, bytes]], dim: int) -> ExactIndex:
    """An ExactIndex over (seq, user_ref, vector_send) rows, in seq order."""
    rows = sorted(rows, key=lambda r: r[0])
    index = ExactIndex(dim)
    vectors = (np.stack([_vector_from_send(bytes(r[2])) for r in rows]) if rows
               else np.empty((0, dim), dtype=np.float32))
    index.reset(np.array([r[0] for r in rows], dtype=np.int64), vectors,
                np.array([NO_GROUP if r[1] is None else r[1] for r in rows], dtype=np.int64))
    return index


class PostgresStore(FaceStore):
    """FaceStore on PostgreSQL + pgvector at ``dsn`` (a libpq URL or key=value string).

    ``schema``: the schema to keep the tables in (created if missing; default: the
    connection's search_path, normally ``public``). ``pool_size``: connections kept,
    one per request thread. ``approximate_above``: see the module docstring. ``hnsw``:
    give each new collection its HNSW index (default; False saves the index's cost on
    every insert, ~4 ms a face here, where only exact search is wanted). Safe to
    share between threads; any number of processes may open the same database.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, pool_size: int = DEFAULT_POOL_SIZE,
                 region: str = "us-east-1", account_id: str = "000000000000",
                 max_faces_per_collection: int = MAX_FACES_PER_COLLECTION,
                 max_faces_per_user: int = MAX_FACES_PER_USER,
                 approximate_above: int | None = None, hnsw: bool = True,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S):
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r}: lower-case letters, digits and _, not starting with a digit")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._dsn = dsn
        self._schema = schema
        self._pool_size = int(pool_size)
        self._connect_timeout = float(connect_timeout)
        self._arn_prefix = f"arn:aws:rekognition:{region}:{account_id}:collection/"
        self._max_faces_per_collection = int(max_faces_per_collection)
        self._max_faces_per_user = int(max_faces_per_user)
        self._approximate_above = approximate_above
        self._hnsw = bool(hnsw)
        self._closed = False
        self.pgvector_version: tuple[int, ...] = ()
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()
        self._pool = self._open_pool()
        self._tokens = PageTokens(self._initialise())

    # --- connections and transactions

    def _open_pool(self):
        import psycopg
        from psycopg_pool import ConnectionPool

        kwargs: dict[str, Any] = {"autocommit": True}
        if self._schema is not None:
            # the schema first; public after it, where CREATE EXTENSION put pgvector's type
            kwargs["options"] = f"-c search_path={self._schema},public"
        try:  # one connection first: its error says why (the pool's would only say it timed out)
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
                                 ) as conn, conn.transaction():
                if self._schema is not None:
                    # IF NOT EXISTS is not safe against a concurrent CREATE: starting servers queue
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
        except psycopg.OperationalError as error:
            raise InternalServerError(f"could not connect to the database: {error}") from None
        pool = ConnectionPool(self._dsn, min_size=1, max_size=self._pool_size, kwargs=kwargs,
                              timeout=self._connect_timeout, open=False, name="faceaudit-store")
        pool.open(wait=True, timeout=self._connect_timeout)
        return pool

    def _current_pool(self):
        if self._closed:
            raise InternalServerError("the store is closed")
        if self._pid != os.getpid():
            # a forked child must not touch the parent's sockets: a pool of its own
            with self._pool_lock:
                if self._pid != os.getpid():
                    self._pool = self._open_pool()
                    self._pid = os.getpid()
        return self._pool

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Any]:
        import psycopg

        try:
            with self._current_pool().connection() as conn, conn.transaction():
                if not write:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield conn
        except psycopg.OperationalError as error:
            raise InternalServerError(f"the database could not be reached: {error}") from error

    def _read(self):
        """A read-only transaction: every statement in it sees one snapshot."""
        return self._transaction(write=False)

    def _write(self):
        """One write transaction; callers lock their collection's row first."""
        return self._transaction(write=True)

    def _initialise(self) -> bytes:
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            migrate(conn, MIGRATIONS, describe=f"the database's schema {self._schema or '(default)'}",
                    error=InternalServerError)
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            self.pgvector_version = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
            return bytes(conn.execute("SELECT value FROM meta WHERE key = 'token_secret'").fetchone()[0])

    def close(self) -> None:
        self._closed = True
        if self._pid == os.getpid():
            self._pool.close()

    # --- helpers

    @staticmethod
    def _collection(conn, collection_id: str, *, lock: bool = False) -> _CollRow:
        row = conn.execute(f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE collection_id = %s"
                           + (" FOR UPDATE" if lock else ""), (collection_id,)).fetchone()
        if row is None:
            raise ResourceNotFoundException(f"The collection id: {collection_id} does not exist")
        return _CollRow(*row)

    @staticmethod
    def _user_rowid(conn, coll: _CollRow, user_id: str) -> int:
        row = conn.execute("SELECT id FROM users WHERE collection = %s AND user_id = %s",
                           (coll.id, user_id)).fetchone()
        if row is None:
            raise ResourceNotFoundException(
                f"The user id: {user_id} does not exist in collection {coll.collection_id}")
        return int(row[0])

    @staticmethod
    def _bump(conn, coll: _CollRow, *, faces: int = 0, users: int = 0, dim: int | None = None) -> None:
        conn.execute("UPDATE collections SET face_count = face_count + %s, user_count = user_count + %s, "
                     "vector_dim = COALESCE(vector_dim, %s) WHERE id = %s", (faces, users, dim, coll.id))

    @staticmethod
    def _hnsw_index_name(coll: _CollRow) -> str:
        return f"faces_hnsw_{int(coll.id)}"

    # --- collections

    def create_collection(self, collection_id: str, face_model_version: str) -> Collection:
        import psycopg

        validate_collection_id(collection_id)
        if not isinstance(face_model_version, str) or not face_model_version:
            raise InvalidParameterException("FaceModelVersion must be a non-empty string")
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_COLLECTIONS_LOCK,))
            try:
                with conn.transaction():  # a savepoint: the duplicate is reported, not fatal
                    conn.execute(
                        "INSERT INTO collections (collection_id, arn, face_model_version, created_ms) "
                        "VALUES (%s, %s, %s, %s)",
                        (collection_id, self._arn_prefix + collection_id, face_model_version,
                         int(time.time() * 1000)))
            except psycopg.errors.UniqueViolation:
                raise ResourceAlreadyExistsException(
                    f"The collection id: {collection_id} already exists") from None
            return self._collection(conn, collection_id).to_collection()

    def restore_created(self, collection_id: str, created: datetime) -> None:
        """Give the collection the creation time it had in another store (``faceaudit storage
        migrate`` keeps DescribeCollection's CreationTimestamp)."""
        validate_collection_id(collection_id)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            conn.execute("UPDATE collections SET created_ms = %s WHERE id = %s",
                         (round(created.timestamp() * 1000), coll.id))

    def describe_collection(self, collection_id: str) -> Collection:
        validate_collection_id(collection_id)
        with self._read() as conn:
            return self._collection(conn, collection_id).to_collection()

    def list_collections_detailed(self, next_token=None, max_results=None):
        limit = validate_page_size(max_results, DEFAULT_PAGE_SIZE, PAGE_SIZE_MAX)
        after = self._tokens.after(next_token, KIND_COLLECTIONS, 0)
        with self._read() as conn:
            rows = [_CollRow(*r) for r in conn.execute(
                f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit + 1)).fetchall()]
        token = self._tokens.issue(KIND_COLLECTIONS, 0, rows[limit - 1].id) if len(rows) > limit else None
        return [r.to_collection() for r in rows[:limit]], token

    def delete_collection(self, collection_id: str) -> None:
        validate_collection_id(collection_id)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            conn.execute("DELETE FROM faces WHERE collection = %s", (coll.id,))
            conn.execute("DELETE FROM users WHERE collection = %s", (coll.id,))
            conn.execute("DELETE FROM collections WHERE id = %s", (coll.id,))
            conn.execute(f"DROP INDEX IF EXISTS {self._hnsw_index_name(coll)}")

    # --- faces

    def add_faces(self, collection_id: str, faces: Sequence[StoredFace]) -> None:
        import psycopg

        validate_collection_id(collection_id)
        faces = list(faces)
        vectors = [validate_new_face(face) for face in faces]
        dims = {len(v) for v in vectors}
        if len(dims) > 1:
            raise InvalidParameterException("the faces' vectors have different dimensions")
        if len({face.face_id for face in faces}) != len(faces):
            raise InvalidParameterException("the same FaceId appears twice")
        dim = dims.pop() if dims else None
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            if not faces:
                return
            assert dim is not None
            if coll.vector_dim is not None and coll.vector_dim != dim:
                raise InvalidParameterException(
                    f"vectors of dimension {dim} cannot join collection {collection_id}, "
                    f"whose vectors have dimension {coll.vector_dim}")
            if coll.face_count + len(faces) > self._max_faces_per_collection:
                raise ServiceQuotaExceededException(
                    f"collection {collection_id} would exceed {self._max_faces_per_collection} faces")
            if self._hnsw and coll.vector_dim is None and dim <= HNSW_MAX_DIM:
                # First faces: the collection's dimension is fixed now, and its HNSW index made.
                # SHARE ROW EXCLUSIVE conflicts with itself, so two first adds (which would
                # otherwise each hold SHARE and wait for the other's inserts) run one at a time.
                conn.execute("LOCK TABLE faces IN SHARE ROW EXCLUSIVE MODE")
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {self._hnsw_index_name(coll)} ON faces USING hnsw "
                    f"((embedding::vector({int(dim)})) vector_l2_ops) WHERE collection = {int(coll.id)}")
            rows = [
                (coll.id, face.face_id, face.image_id, face.external_image_id,
                 float(face.bounding_box["Width"]), float(face.bounding_box["Height"]),
                 float(face.bounding_box["Left"]), float(face.bounding_box["Top"]),
                 float(face.confidence), face.index_faces_model_version, vector_literal(vector))
                for face, vector in zip(faces, vectors)]
            try:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO faces (collection, face_id, image_id, external_image_id, "
                        "bbox_width, bbox_height, bbox_left, bbox_top, confidence, "
                        "index_faces_model_version, embedding) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::vector)", rows)
            except psycopg.errors.UniqueViolation:
                raise InvalidParameterException(
                    f"a FaceId to add already exists in collection {collection_id}") from None
            self._bump(conn, coll, faces=len(faces), dim=dim)

    def list_faces(self, collection_id, next_token=None, max_results=None, user_id=None,
                   face_ids=None):
        validate_collection_id(collection_id)
        limit = validate_page_size(max_results, DEFAULT_PAGE_SIZE, PAGE_SIZE_MAX)
        if user_id is not None:
            validate_user_id(user_id)
        if face_ids is not None:
            face_ids = validate_face_ids(face_ids, FACE_ID_LIST_MAX)
        digest = NO_FILTER
        if user_id is not None or face_ids is not None:
            digest = filter_digest(json.dumps([user_id, sorted(face_ids) if face_ids is not None else None]))
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            after = self._tokens.after(next_token, KIND_FACES, coll.id, digest)
            sql = f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.collection = %s AND f.seq > %s"
            params: list = [coll.id, after]
            if user_id is not None:
                sql += " AND f.user_ref = %s"
                params.append(self._user_rowid(conn, coll, user_id))
            if face_ids is not None:
                sql += " AND f.face_id = ANY(%s)"
                params.append(face_ids)
            sql += " ORDER BY f.seq LIMIT %s"
            params.append(limit + 1)
            rows = conn.execute(sql, params).fetchall()
        token = None
        if len(rows) > limit:
            token = self._tokens.issue(KIND_FACES, coll.id, rows[limit - 1][0], digest)
        return [_face_from_row(r) for r in rows[:limit]], token

    def get_faces(self, collection_id, face_ids):
        validate_collection_id(collection_id)
        if isinstance(face_ids, str):
            raise InvalidParameterException("face_ids must be a list")
        face_ids = list(dict.fromkeys(face_ids))
        for face_id in face_ids:
            validate_face_id(face_id)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            if not face_ids:
                return []
            rows = conn.execute(f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.collection = %s "
                                "AND f.face_id = ANY(%s)", (coll.id, face_ids)).fetchall()
        found = {r[1]: _face_from_row(r) for r in rows}
        return [found[f] for f in face_ids if f in found]

    def delete_faces(self, collection_id, face_ids):
        validate_collection_id(collection_id)
        face_ids = validate_face_ids(face_ids, FACE_ID_LIST_MAX)
        deleted: list[str] = []
        unsuccessful: list[UnsuccessfulFace] = []
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rows = conn.execute(
                "SELECT f.face_id, f.seq, u.user_id FROM faces AS f LEFT JOIN users AS u ON u.id = f.user_ref "
                "WHERE f.collection = %s AND f.face_id = ANY(%s)", (coll.id, face_ids)).fetchall()
            found = {face_id: (seq, user) for face_id, seq, user in rows}
            doomed = []
            for face_id in face_ids:
                if face_id not in found:
                    unsuccessful.append(UnsuccessfulFace(face_id, (DELETE_FACE_NOT_FOUND,)))
                    continue
                seq, user = found[face_id]
                if user is not None:
                    unsuccessful.append(UnsuccessfulFace(
                        face_id, (DELETE_ASSOCIATED_TO_AN_EXISTING_USER,), user_id=user))
                    continue
                deleted.append(face_id)
                doomed.append(seq)
            if doomed:
                conn.execute("DELETE FROM faces WHERE seq = ANY(%s)", (doomed,))
                self._bump(conn, coll, faces=-len(doomed))
        return deleted, unsuccessful

    # --- search

    def index_stats(self, collection_id: str) -> dict:
        """What a search would scan: {'faces': rows in the collection, 'dim': d (0 before any face)}."""
        validate_collection_id(collection_id)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            count = conn.execute("SELECT count(*) FROM faces WHERE collection = %s", (coll.id,)).fetchone()[0]
        return {"faces": int(count), "dim": coll.vector_dim or 0}

    def _approximate(self, coll: _CollRow) -> bool:
        return (self._approximate_above is not None and not coll.exact_only
                and coll.face_count > self._approximate_above
                and coll.vector_dim is not None and coll.vector_dim <= HNSW_MAX_DIM)

    def search_mode(self, collection_id: str) -> str:
        """"exact" or "approximate": how the collection's face searches run now (the guard and
        the audit report it; user search is always exact)."""
        validate_collection_id(collection_id)
        with self._read() as conn:
            return "approximate" if self._approximate(self._collection(conn, collection_id)) else "exact"

    def set_search_mode(self, collection_id: str, mode: str) -> None:
        """"exact": the collection is never searched approximately, on any server (public-safety
        collections and audits); "auto": approximate above ``approximate_above`` faces."""
        validate_collection_id(collection_id)
        if mode not in ("exact", "auto"):
            raise InvalidParameterException(f"search mode {mode!r}: 'exact' or 'auto'")
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            conn.execute("UPDATE collections SET exact_only = %s WHERE id = %s", (mode == "exact", coll.id))

    @staticmethod
    def _check_dim(coll: _CollRow, query: np.ndarray) -> None:
        if query.shape[-1] != coll.vector_dim:
            raise InvalidParameterException(
                f"the query vector has dimension {query.shape[-1]}; the collection's vectors "
                f"have dimension {coll.vector_dim}")

    def _face_candidates(self, conn, coll: _CollRow, query: np.ndarray, k: int,
                         max_distance: float | None, exclude: list[str],
                         wanted_users: list[str] | None) -> list[tuple]:
        """Full rows of every face the exact top k (within max_distance) could hold."""
        assert coll.vector_dim is not None
        filters, params = "", {"c": coll.id, "q": vector_literal(query), "offset": k - 1}
        if exclude:
            filters += " AND NOT (f.face_id = ANY(%(exclude)s))"
            params["exclude"] = exclude
        if wanted_users is not None:
            filters += (" AND f.user_ref IN (SELECT id FROM users WHERE collection = %(c)s "
                        "AND user_id = ANY(%(users)s))")
            params["users"] = wanted_users
        kth_factor, radius_factor = _candidate_factors(coll.vector_dim)
        params["kth_factor"] = kth_factor
        radius = ""
        if max_distance is not None:
            radius = " AND s.d <= %(radius)s"
            params["radius"] = max_distance * radius_factor + 1e-30
        if self._approximate(coll):
            dim = int(coll.vector_dim)
            ef = min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, 4 * k))
            conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            # the HNSW scan is the only plan that needs no sort: make the planner take it even
            # where its (often stale) row estimates make a scan of the collection look cheaper
            conn.execute("SET LOCAL enable_sort = off")
            conn.execute("SET LOCAL enable_seqscan = off")
            if self.pgvector_version >= (0, 8):  # iterative scans (0.8): filters don't starve the search
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            # the collection id inline: the planner must see it to choose the partial index
            scored = (f"SELECT f.seq, f.embedding::vector({dim}) <-> %(q)s::vector({dim}) AS d "
                      f"FROM faces AS f WHERE f.collection = {int(coll.id)}{filters} "
                      f"ORDER BY f.embedding::vector({dim}) <-> %(q)s::vector({dim}) LIMIT {min(ef, 2 * k)}")
        else:
            scored = ("SELECT f.seq, f.embedding <-> %(q)s::vector AS d FROM faces AS f "
                      f"WHERE f.collection = %(c)s{filters}")
        return conn.execute(
            f"WITH scored AS MATERIALIZED ({scored}), "
            "kth AS (SELECT d FROM scored ORDER BY d LIMIT 1 OFFSET %(offset)s) "
            f"SELECT {_FACE_COLUMNS} FROM scored AS s JOIN faces AS f ON f.seq = s.seq "
            "LEFT JOIN users AS u ON u.id = f.user_ref "
            f"WHERE s.d <= COALESCE((SELECT d FROM kth) * %(kth_factor)s + 1e-30, 'Infinity'){radius}",
            params).fetchall()

    def search(self, collection_id, vector, max_results, max_distance=None,
               exclude_face_ids=(), user_ids=None):
        validate_collection_id(collection_id)
        query = as_query_vector(vector)
        k = validate_max_results(max_results)
        max_distance = validate_max_distance(max_distance)
        exclude = [validate_face_id(f) for f in dict.fromkeys(exclude_face_ids or ())]
        wanted_users = None
        if user_ids is not None:
            if isinstance(user_ids, str):
                raise InvalidParameterException("user_ids must be a list")
            wanted_users = [validate_user_id(u) for u in dict.fromkeys(user_ids)]
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            if coll.face_count == 0:
                return []
            self._check_dim(coll, query)
            rows = self._face_candidates(conn, coll, query, k, max_distance, exclude, wanted_users)
        if not rows:
            return []
        by_seq = {r[0]: r for r in rows}
        assert coll.vector_dim is not None
        index = _exact_index([(r[0], r[12], r[11]) for r in rows], coll.vector_dim)
        hits = index.snapshot().nearest(query, k, max_distance)
        # ties (equal distances) in FaceId order, as the embedded store breaks them
        scored = sorted((distance, by_seq[seq][1], seq)
                        for seq, distance in zip(hits.ids.tolist(), hits.distances.tolist()))
        return [(_face_from_row(by_seq[seq]), d) for d, _, seq in scored[:k]]

    def search_users(self, collection_id, vector, max_results, max_distance=None,
                     exclude_user_ids=()):
        validate_collection_id(collection_id)
        query = as_query_vector(vector, allow_matrix=True)
        k = validate_max_results(max_results, "MaxUsers")
        max_distance = validate_max_distance(max_distance)
        if isinstance(exclude_user_ids, str):
            raise InvalidParameterException("exclude_user_ids must be a list")
        excluded = [validate_user_id(u) for u in dict.fromkeys(exclude_user_ids or ())]
        queries = np.atleast_2d(query)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            if coll.face_count == 0:
                return []
            self._check_dim(coll, query)
            assert coll.vector_dim is not None
            kth_factor, radius_factor = _candidate_factors(coll.vector_dim)
            params: dict[str, Any] = {"c": coll.id, "qs": [vector_literal(q) for q in queries],
                                      "offset": k - 1, "kth_factor": kth_factor}
            filters = radius = ""
            if excluded:
                filters = (" AND f.user_ref NOT IN (SELECT id FROM users WHERE collection = %(c)s "
                           "AND user_id = ANY(%(excluded)s))")
                params["excluded"] = excluded
            if max_distance is not None:
                radius = " AND d <= %(radius)s"
                params["radius"] = max_distance * radius_factor + 1e-30
            groups = [r[0] for r in conn.execute(
                "WITH per_user AS MATERIALIZED ("
                "  SELECT f.user_ref AS g, min(f.embedding <-> q.v) AS d"
                "  FROM faces AS f CROSS JOIN unnest(%(qs)s::text[]::vector[]) AS q(v)"
                f"  WHERE f.collection = %(c)s AND f.user_ref IS NOT NULL{filters} GROUP BY f.user_ref), "
                "kth AS (SELECT d FROM per_user ORDER BY d LIMIT 1 OFFSET %(offset)s) "
                "SELECT g FROM per_user "
                f"WHERE d <= COALESCE((SELECT d FROM kth) * %(kth_factor)s + 1e-30, 'Infinity'){radius}",
                params).fetchall()]
            if not groups:
                return []
            rows = conn.execute("SELECT seq, user_ref, vector_send(embedding) FROM faces "
                                "WHERE collection = %s AND user_ref = ANY(%s)", (coll.id, groups)).fetchall()
            names = dict(conn.execute("SELECT id, user_id FROM users WHERE id = ANY(%s)", (groups,)).fetchall())
        hits = _exact_index(rows, coll.vector_dim).snapshot().nearest_groups(query, k, max_distance)
        scored = sorted((d, names[u]) for u, d in zip(hits.ids.tolist(), hits.distances.tolist()))
        return [(User(name, USER_ACTIVE), d) for d, name in scored[:k]]

    # --- users

    def create_user(self, collection_id, user_id):
        import psycopg

        validate_collection_id(collection_id)
        validate_user_id(user_id)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO users (collection, user_id) VALUES (%s, %s)", (coll.id, user_id))
            except psycopg.errors.UniqueViolation:
                raise ConflictException(
                    f"The user id: {user_id} already exists in collection {collection_id}") from None
            self._bump(conn, coll, users=1)
        return User(user_id, USER_CREATED)

    def get_user(self, collection_id, user_id):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            rowid = self._user_rowid(conn, coll, user_id)
            has_faces = conn.execute("SELECT EXISTS (SELECT 1 FROM faces WHERE user_ref = %s)",
                                     (rowid,)).fetchone()[0]
        return User(user_id, _user_status(bool(has_faces)))

    def delete_user(self, collection_id, user_id):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rowid = self._user_rowid(conn, coll, user_id)
            conn.execute("UPDATE faces SET user_ref = NULL WHERE user_ref = %s", (rowid,))
            conn.execute("DELETE FROM users WHERE id = %s", (rowid,))
            self._bump(conn, coll, users=-1)

    def list_users(self, collection_id, next_token=None, max_results=None):
        validate_collection_id(collection_id)
        limit = validate_page_size(max_results, DEFAULT_USER_PAGE_SIZE, USER_PAGE_SIZE_MAX)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            after = self._tokens.after(next_token, KIND_USERS, coll.id)
            rows = conn.execute(
                "SELECT u.id, u.user_id, EXISTS (SELECT 1 FROM faces AS f WHERE f.user_ref = u.id) "
                "FROM users AS u WHERE u.collection = %s AND u.id > %s ORDER BY u.id LIMIT %s",
                (coll.id, after, limit + 1)).fetchall()
        token = self._tokens.issue(KIND_USERS, coll.id, rows[limit - 1][0]) if len(rows) > limit else None
        return [User(name, _user_status(bool(has))) for _, name, has in rows[:limit]], token

    @staticmethod
    def _faces_for_users_op(conn, coll: _CollRow, face_ids: list[str]) -> dict:
        rows = conn.execute(
            "SELECT f.face_id, f.seq, f.user_ref, u.user_id, vector_send(f.embedding) FROM faces AS f "
            "LEFT JOIN users AS u ON u.id = f.user_ref WHERE f.collection = %s AND f.face_id = ANY(%s)",
            (coll.id, face_ids)).fetchall()
        return {r[0]: r[1:] for r in rows}

    def associate_faces(self, collection_id, user_id, face_ids, max_distance=None, distances=None):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        face_ids = validate_face_ids(face_ids, USER_FACE_ID_LIST_MAX)
        max_distance = validate_max_distance(max_distance)
        associated: list[str] = []
        unsuccessful: list[UnsuccessfulFace] = []
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rowid = self._user_rowid(conn, coll, user_id)
            existing = [_vector_from_send(bytes(r[0])) for r in conn.execute(
                "SELECT vector_send(embedding) FROM faces WHERE user_ref = %s", (rowid,))]
            existing_matrix = np.stack(existing).astype(np.float64) if existing else None
            found = self._faces_for_users_op(conn, coll, face_ids)
            to_link = []
            for face_id in face_ids:
                if face_id not in found:
                    unsuccessful.append(UnsuccessfulFace(face_id, (ASSOCIATE_FACE_NOT_FOUND,)))
                    continue
                seq, owner, owner_name, blob = found[face_id]
                if owner == rowid:
                    continue  # already this user's: ignored, as Rekognition does
                if owner is not None:
                    unsuccessful.append(UnsuccessfulFace(
                        face_id, (ASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,), user_id=owner_name))
                    continue
                if max_distance is not None and existing_matrix is not None:
                    vector = _vector_from_send(bytes(blob)).astype(np.float64)
                    if distances is None:
                        distance = float(np.sqrt(((existing_matrix - vector) ** 2).sum(axis=1)).min())
                    else:
                        distance = float(np.min(distances(vector[None, :], existing_matrix)))
                    if distance > max_distance:
                        unsuccessful.append(UnsuccessfulFace(
                            face_id, (ASSOCIATE_LOW_MATCH_CONFIDENCE,), user_id=None, distance=distance))
                        continue
                associated.append(face_id)
                to_link.append(seq)
            if len(existing) + len(to_link) > self._max_faces_per_user and to_link:
                raise ServiceQuotaExceededException(
                    f"user {user_id} would have more than {self._max_faces_per_user} faces")
            if to_link:
                conn.execute("UPDATE faces SET user_ref = %s WHERE seq = ANY(%s)", (rowid, to_link))
        return AssociationResult(associated, unsuccessful, _user_status(bool(existing or to_link)))

    def disassociate_faces(self, collection_id, user_id, face_ids):
        validate_collection_id(collection_id)
        validate_user_id(user_id)
        face_ids = validate_face_ids(face_ids, USER_FACE_ID_LIST_MAX)
        disassociated: list[str] = []
        unsuccessful: list[UnsuccessfulFace] = []
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rowid = self._user_rowid(conn, coll, user_id)
            found = self._faces_for_users_op(conn, coll, face_ids)
            to_unlink = []
            for face_id in face_ids:
                if face_id not in found:
                    unsuccessful.append(UnsuccessfulFace(face_id, (DISASSOCIATE_FACE_NOT_FOUND,)))
                    continue
                seq, owner, owner_name, _ = found[face_id]
                if owner is None:
                    continue  # already disassociated: ignored
                if owner != rowid:
                    unsuccessful.append(UnsuccessfulFace(
                        face_id, (DISASSOCIATE_ASSOCIATED_TO_A_DIFFERENT_USER,), user_id=owner_name))
                    continue
                disassociated.append(face_id)
                to_unlink.append(seq)
            if to_unlink:
                conn.execute("UPDATE faces SET user_ref = NULL WHERE seq = ANY(%s)", (to_unlink,))
            remaining = conn.execute("SELECT EXISTS (SELECT 1 FROM faces WHERE user_ref = %s)",
                                     (rowid,)).fetchone()[0]
        return AssociationResult(disassociated, unsuccessful, _user_status(bool(remaining)))
