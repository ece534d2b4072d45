"""PostgresStore: the FaceStore on PostgreSQL with pgvector, for several servers on one database.

Same semantics, limits, errors and exact answers as faceaudit.storage.embedded; what
differs is where the vectors are searched and how writers are kept apart. What does not
depend on the database is one code for both (faceaudit.storage.backend_shared).

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

import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from faceaudit.errors import (
    InternalServerError,
    InvalidParameterException,
    ResourceAlreadyExistsException,
)
from faceaudit.storage.backend_shared import (
    FaceOwner,
    TableStore,
    check_face_query,
    check_new_collection,
    check_new_faces,
    check_query_dim,
    check_room,
    check_user_query,
    collection_not_found,
    collection_record,
    ranked_face_rows,
    ranked_users,
    sort_deletion,
    user_exists,
    user_not_found,
)
from faceaudit.storage.base import (
    FACE_ID_LIST_MAX,
    MAX_FACES_PER_COLLECTION,
    MAX_FACES_PER_USER,
    Collection,
    StoredFace,
    validate_collection_id,
    validate_face_ids,
)
from faceaudit.storage.migrations import Step, latest_version, migrate
from faceaudit.storage.page_tokens import (
    PageTokens,
)
from faceaudit.storage.vector_index import NO_GROUP, ExactIndex

DEFAULT_POOL_SIZE = 8
DEFAULT_CONNECT_TIMEOUT_S = 30.0
HNSW_MAX_DIM = 2000  # pgvector indexes vectors of up to 2,000 dimensions
# 400: recall@10 at ef_search 100 / 200 / 400 was 0.948 / 0.981 / 0.995 at 300k faces and
# 0.855 / 0.929 / 0.971 at 1M (docs/scale.md): 200 falls below 0.95 at 1M
EF_SEARCH_MIN, EF_SEARCH_MAX = 400, 1000  # pgvector's hnsw.ef_search range tops out at 1,000
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
        return collection_record(self)


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


def _exact_index(rows: Sequence[tuple[int, int | None, bytes]], dim: int) -> ExactIndex:
    """An ExactIndex over (seq, user_ref, vector_send) rows, in seq order."""
    rows = sorted(rows, key=lambda r: r[0])
    index = ExactIndex(dim)
    vectors = (np.stack([_vector_from_send(bytes(r[2])) for r in rows]) if rows
               else np.empty((0, dim), dtype=np.float32))
    index.reset(np.array([r[0] for r in rows], dtype=np.int64), vectors,
                np.array([NO_GROUP if r[1] is None else r[1] for r in rows], dtype=np.int64))
    return index


class PostgresStore(TableStore):
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
            raise collection_not_found(collection_id)
        return _CollRow(*row)

    @staticmethod
    def _user_rowid(conn, coll: _CollRow, user_id: str) -> int:
        row = conn.execute("SELECT id FROM users WHERE collection = %s AND user_id = %s",
                           (coll.id, user_id)).fetchone()
        if row is None:
            raise user_not_found(user_id, coll.collection_id)
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

        check_new_collection(collection_id, face_model_version)
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

        new = check_new_faces(collection_id, faces)
        faces, dim = new.faces, new.dim
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            if not faces:
                return
            assert dim is not None
            check_room(collection_id, coll.vector_dim, coll.face_count, new, self._max_faces_per_collection)
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
                for face, vector in zip(faces, new.vectors)]
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

    def delete_faces(self, collection_id, face_ids):
        validate_collection_id(collection_id)
        face_ids = validate_face_ids(face_ids, FACE_ID_LIST_MAX)
        with self._write() as conn:
            coll = self._collection(conn, collection_id, lock=True)
            rows = conn.execute(
                "SELECT f.face_id, f.seq, u.user_id FROM faces AS f LEFT JOIN users AS u ON u.id = f.user_ref "
                "WHERE f.collection = %s AND f.face_id = ANY(%s)", (coll.id, face_ids)).fetchall()
            change = sort_deletion(face_ids, {face_id: (seq, user) for face_id, seq, user in rows})
            if change.seqs:
                conn.execute("DELETE FROM faces WHERE seq = ANY(%s)", (change.seqs,))
                self._bump(conn, coll, faces=-len(change.seqs))
        return change.changed, change.unsuccessful

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
        query = check_face_query(collection_id, vector, max_results, max_distance, exclude_face_ids, user_ids)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            if coll.face_count == 0:
                return []
            check_query_dim(query.vector, coll.vector_dim)
            rows = self._face_candidates(conn, coll, query.vector, query.k, query.max_distance,
                                         query.exclude, query.user_ids)
        if not rows:
            return []
        assert coll.vector_dim is not None
        index = _exact_index([(r[0], r[12], r[11]) for r in rows], coll.vector_dim)
        hits = index.snapshot().nearest(query.vector, query.k, query.max_distance)
        return [(_face_from_row(r), d) for r, d in ranked_face_rows(hits, {r[0]: r for r in rows}, query.k)]

    def search_users(self, collection_id, vector, max_results, max_distance=None,
                     exclude_user_ids=()):
        query = check_user_query(collection_id, vector, max_results, max_distance, exclude_user_ids)
        queries = np.atleast_2d(query.vector)
        with self._read() as conn:
            coll = self._collection(conn, collection_id)
            if coll.face_count == 0:
                return []
            check_query_dim(query.vector, coll.vector_dim)
            assert coll.vector_dim is not None
            kth_factor, radius_factor = _candidate_factors(coll.vector_dim)
            params: dict[str, Any] = {"c": coll.id, "qs": [vector_literal(q) for q in queries],
                                      "offset": query.k - 1, "kth_factor": kth_factor}
            filters = radius = ""
            if query.exclude:
                filters = (" AND f.user_ref NOT IN (SELECT id FROM users WHERE collection = %(c)s "
                           "AND user_id = ANY(%(excluded)s))")
                params["excluded"] = query.exclude
            if query.max_distance is not None:
                radius = " AND d <= %(radius)s"
                params["radius"] = query.max_distance * radius_factor + 1e-30
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
        hits = _exact_index(rows, coll.vector_dim).snapshot().nearest_groups(
            query.vector, query.k, query.max_distance)
        return ranked_users(hits, names, query.k)

    # --- users

    def _collections_after(self, conn, after: int, limit: int) -> list[_CollRow]:
        return [_CollRow(*r) for r in conn.execute(
            f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE id > %s ORDER BY id LIMIT %s",
            (after, limit)).fetchall()]

    def _faces_after(self, conn, coll: _CollRow, after: int, limit: int, user_ref: int | None,
                     face_ids: list[str] | None) -> list[tuple[int, StoredFace]]:
        sql = f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.collection = %s AND f.seq > %s"
        params: list = [coll.id, after]
        if user_ref is not None:
            sql += " AND f.user_ref = %s"
            params.append(user_ref)
        if face_ids is not None:
            sql += " AND f.face_id = ANY(%s)"
            params.append(face_ids)
        sql += " ORDER BY f.seq LIMIT %s"
        params.append(limit)
        return [(r[0], _face_from_row(r)) for r in conn.execute(sql, params).fetchall()]

    def _faces_by_id(self, conn, coll: _CollRow, face_ids: list[str]) -> list[StoredFace]:
        return [_face_from_row(r) for r in conn.execute(
            f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.collection = %s AND f.face_id = ANY(%s)",
            (coll.id, face_ids)).fetchall()]

    def _insert_user(self, conn, coll: _CollRow, user_id: str) -> None:
        import psycopg

        try:
            with conn.transaction():  # a savepoint: the duplicate is reported, not fatal
                conn.execute("INSERT INTO users (collection, user_id) VALUES (%s, %s)", (coll.id, user_id))
        except psycopg.errors.UniqueViolation:
            raise user_exists(user_id, coll.collection_id) from None
        self._bump(conn, coll, users=1)

    def _remove_user(self, conn, coll: _CollRow, user_ref: int) -> None:
        conn.execute("UPDATE faces SET user_ref = NULL WHERE user_ref = %s", (user_ref,))
        conn.execute("DELETE FROM users WHERE id = %s", (user_ref,))
        self._bump(conn, coll, users=-1)

    def _user_has_faces(self, conn, user_ref: int) -> bool:
        return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM faces WHERE user_ref = %s)",
                                 (user_ref,)).fetchone()[0])

    def _users_after(self, conn, coll: _CollRow, after: int, limit: int) -> list[tuple[int, str, bool]]:
        return conn.execute(
            "SELECT u.id, u.user_id, EXISTS (SELECT 1 FROM faces AS f WHERE f.user_ref = u.id) "
            "FROM users AS u WHERE u.collection = %s AND u.id > %s ORDER BY u.id LIMIT %s",
            (coll.id, after, limit)).fetchall()

    def _user_vectors(self, conn, coll: _CollRow, user_ref: int) -> np.ndarray:
        vectors = [_vector_from_send(bytes(r[0])) for r in conn.execute(
            "SELECT vector_send(embedding) FROM faces WHERE user_ref = %s", (user_ref,))]
        return np.stack(vectors) if vectors else np.empty((0, coll.vector_dim or 0), dtype=np.float32)

    def _faces_for_users_op(self, conn, coll: _CollRow, face_ids: list[str]) -> dict[str, FaceOwner]:
        rows = conn.execute(
            "SELECT f.face_id, f.seq, f.user_ref, u.user_id, vector_send(f.embedding) FROM faces AS f "
            "LEFT JOIN users AS u ON u.id = f.user_ref WHERE f.collection = %s AND f.face_id = ANY(%s)",
            (coll.id, face_ids)).fetchall()
        return {r[0]: FaceOwner(r[1], r[2], r[3], _vector_from_send(bytes(r[4]))) for r in rows}

    def _set_user(self, conn, coll: _CollRow, user_ref: int | None, seqs: list[int]) -> None:
        conn.execute("UPDATE faces SET user_ref = %s WHERE seq = ANY(%s)", (user_ref, seqs))
