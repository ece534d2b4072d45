"""EmbeddedStore: the default backend - one SQLite file plus an in-memory search index.

This module is the SQLite side only: schema, transactions, and keeping each
collection's in-memory index (faceaudit.storage.vector_index, plain numpy,
which also says why search is exact and how) in step with the database;
NextTokens come from faceaudit.storage.page_tokens, and what does not depend on SQLite
(argument checks, the UserID operations, how results are shaped) from
faceaudit.storage.backend_shared, which PostgresStore shares.

Layout and guarantees
---------------------
* ``data_dir/faceaudit.db`` (SQLite, WAL mode) holds everything: collections,
  users, and each face's record *with its vector* (a little-endian float32 BLOB
  in the same row). A face and its vector are written by one transaction, so
  after any crash every face is either fully present or absent, and the
  collection's face_count (updated in that same transaction) always equals its
  number of face rows. There is no second file to keep in step.
* The search index is an in-memory numpy matrix per collection, *derived* from
  SQLite, which stays the single source of truth. It is loaded lazily on the
  first search and kept in step through counters on the collection row that
  every write transaction bumps: ``change_counter`` (any write),
  ``delete_counter`` (faces deleted) and ``assoc_counter`` (face-to-UserID links
  changed). Before searching, the store reads them inside the search's own read
  transaction and, if they moved, refreshes cheaply: only the faces with a
  rowid above the last one seen are appended (rowids come from AUTOINCREMENT,
  are never reused, and are handed out in commit order because writers are
  serialised, so new faces are always above it); the rowids a deletion removed
  are read from a small deletion log written in the deleting transaction and
  their rows are marked dead (compacted once a quarter of the rows are dead; an
  index more than DELETION_LOG_KEEP deletions behind compares rowids instead,
  still without reading vectors); the user column is reloaded when
  associations changed. Only a new collection rowid (collection deleted and
  re-created) or a first search loads everything. The search and the metadata
  it returns are computed in one read transaction against an index that
  matches that transaction's snapshot exactly, so another process's commits
  (or a restart) are always seen, and never half.

Search
------
A search takes a snapshot of the collection's index inside its own read
transaction (exact, or - for a collection in search mode "approximate", or
"auto" and at least ``ApproximateSearch.threshold`` faces - one whose HNSW graph
proposes candidates that are then measured exactly; the graph lives in
``data_dir/index/<collection rowid>.hnsw``, see storage/approximate_index.py);
the index answers with rowids and exact distances (every row tied with the k-th
included, among the rows it looked at), and the store breaks ties by FaceId (UserId for user
search), cuts to k, and reads the records in that same transaction. The first
search after opening loads the index, ~0.6 s per 100k faces.

Synchronous mode: FULL by default
---------------------------------
In WAL mode ``synchronous=NORMAL`` is already crash-*consistent* (the database is
never corrupted, and a killed process loses nothing that was committed), but
after a power cut or OS crash the last transactions can be rolled back. An
IndexFaces response hands the caller a FaceId; an audit trail in which an
acknowledged face silently disappears is wrong, so the default is FULL (the WAL
is fsynced at every commit), which makes acknowledged writes durable. The price
is one fsync per write transaction: measured ~4 ms per add_faces call instead of
~0.2 ms (about 250 instead of 4,500 single-face calls per second), which is
small next to the detection and embedding an IndexFaces call does anyway.
Deployments that prefer throughput can pass ``synchronous="NORMAL"``.

Threads and processes
---------------------
One SQLite connection per thread (faceaudit.storage.sqlite_connections), not one shared
connection behind a lock: with WAL, readers on separate connections run in
parallel with each other and with the single writer, so concurrent SearchFaces
and ListFaces calls from the HTTP server's threads do not queue behind one
lock, and a slow reader never blocks IndexFaces. Writers (threads or
processes) are serialised by SQLite itself: every write is one short
``BEGIN IMMEDIATE`` transaction (taking the write lock up front, so no
transaction ever has to upgrade a read lock and fail with SQLITE_BUSY) and
``busy_timeout`` makes a writer wait for the lock instead of failing. The
in-memory index is shared by the threads of a process; a per-collection lock
guards its refresh, and searches run on immutable views of it outside the lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import fasteners
import numpy as np

from faceaudit.errors import (
    InternalServerError,
    InvalidParameterException,
    ResourceAlreadyExistsException,
)
from faceaudit.storage.approximate_index import (
    ApproximateIndex,
    GraphFile,
    GraphFileError,
    HnswParams,
    build_graph,
    check_against,
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
    SEARCH_APPROXIMATE,
    SEARCH_AUTO,
    SEARCH_EXACT,
    Collection,
    StoredFace,
    validate_collection_id,
    validate_face_ids,
    validate_search_mode,
)
from faceaudit.storage.migrations import Step, latest_version, migrate
from faceaudit.storage.page_tokens import (
    PageTokens,
)
from faceaudit.storage.sqlite_connections import ThreadConnections
from faceaudit.storage.sqlite_transactions import immediate_transaction
from faceaudit.storage.vector_index import NO_GROUP, IndexSnapshot

DB_FILENAME = "faceaudit.db"
INDEX_DIRNAME = "index"  # data_dir/index/<collection rowid>.hnsw: the approximate search graphs
DEFAULT_BUSY_TIMEOUT_S = 30.0
DELETION_LOG_KEEP = 1000  # delete operations remembered per collection
# Live faces from which an "auto" collection is searched through its HNSW graph: where an exact
# search's p50 passes a few milliseconds on 2 busy cores (benchmarks/search.py, docs/scale.md).
DEFAULT_APPROXIMATE_THRESHOLD = 50_000

_SCHEMA = [
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    )""",
    """CREATE TABLE collections (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id      TEXT    NOT NULL UNIQUE,
        arn                TEXT    NOT NULL,
        face_model_version TEXT    NOT NULL,
        created_ms         INTEGER NOT NULL,
        face_count         INTEGER NOT NULL DEFAULT 0 CHECK (face_count >= 0),
        user_count         INTEGER NOT NULL DEFAULT 0 CHECK (user_count >= 0),
        vector_dim         INTEGER,              -- fixed by the first face added
        change_counter     INTEGER NOT NULL DEFAULT 0,  -- bumped by every write
        delete_counter     INTEGER NOT NULL DEFAULT 0,  -- bumped when faces are deleted
        assoc_counter      INTEGER NOT NULL DEFAULT 0   -- bumped when face->user links change
    )""",
    """CREATE TABLE users (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        collection INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        user_id    TEXT    NOT NULL,
        UNIQUE (collection, user_id)
    )""",
    # seq: AUTOINCREMENT so a rowid is never reused - pagination tokens and the
    # append-only index refresh rely on it.
    """CREATE TABLE faces (
        seq                       INTEGER PRIMARY KEY AUTOINCREMENT,
        collection                INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        face_id                   TEXT    NOT NULL,
        image_id                  TEXT    NOT NULL,
        external_image_id         TEXT,
        bbox_width                REAL    NOT NULL,
        bbox_height               REAL    NOT NULL,
        bbox_left                 REAL    NOT NULL,
        bbox_top                  REAL    NOT NULL,
        confidence                REAL    NOT NULL,
        index_faces_model_version TEXT    NOT NULL,
        user                      INTEGER REFERENCES users(id),
        vector                    BLOB    NOT NULL,  -- little-endian float32 x vector_dim
        UNIQUE (collection, face_id)
    )""",
    # Rowids of deleted faces, per delete operation (delete_counter value), so
    # that other processes' indexes can drop exactly those rows. Pruned to the
    # last DELETION_LOG_KEEP operations per collection; an index further behind
    # compares rowids instead.
    """CREATE TABLE face_deletions (
        collection     INTEGER NOT NULL,
        delete_counter INTEGER NOT NULL,
        seq            INTEGER NOT NULL
    )""",
    "CREATE INDEX face_deletions_by_counter ON face_deletions (collection, delete_counter)",
    "CREATE INDEX faces_by_collection ON faces (collection, seq)",
    "CREATE INDEX faces_by_user ON faces (user)",
    # covering index for reloading the index's user column (associated faces only)
    "CREATE INDEX faces_associated ON faces (collection, user) WHERE user IS NOT NULL",
]

def _new_token_secret(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES ('token_secret', ?)", (os.urandom(32),))


# faceaudit.storage.migrations: version 1 creates the schema; a change is a new version
# (never an edit of a released one), and SCHEMA_VERSION follows the last.
MIGRATIONS: dict[int, list[Step]] = {
    1: [*_SCHEMA, _new_token_secret],
    # 2: how a collection is searched (faceaudit.storage.base.SEARCH_MODES)
    2: ["ALTER TABLE collections ADD COLUMN search_mode TEXT NOT NULL DEFAULT 'auto' "
        "CHECK (search_mode IN ('exact', 'approximate', 'auto'))"],
}
SCHEMA_VERSION = latest_version(MIGRATIONS)

_FACE_COLUMNS = (
    "f.seq, f.face_id, f.image_id, f.external_image_id, f.bbox_width, f.bbox_height, "
    "f.bbox_left, f.bbox_top, f.confidence, f.index_faces_model_version, u.user_id, f.vector")
_FACE_FROM = "faces AS f LEFT JOIN users AS u ON u.id = f.user"

_COLLECTION_COLUMNS = (
    "id, collection_id, arn, face_model_version, created_ms, face_count, user_count, "
    "vector_dim, change_counter, delete_counter, assoc_counter, search_mode")

class _CollRow(NamedTuple):
    id: int
    collection_id: str
    arn: str
    face_model_version: str
    created_ms: int
    face_count: int
    user_count: int
    vector_dim: int | None
    change_counter: int
    delete_counter: int
    assoc_counter: int
    search_mode: str

    def to_collection(self) -> Collection:
        return collection_record(self)


def _face_from_row(row) -> StoredFace:
    (_, face_id, image_id, external_image_id, width, height, left, top, confidence,
     model_version, user_id, blob) = row
    return StoredFace(
        face_id=face_id,
        image_id=image_id,
        external_image_id=external_image_id,
        bounding_box={"Width": width, "Height": height, "Left": left, "Top": top},
        confidence=confidence,
        index_faces_model_version=model_version,
        user_id=user_id,
        vector=np.frombuffer(blob, dtype="<f4").astype(np.float32),
    )


def _json_list(values) -> str:
    return json.dumps(list(values))


def _vectors_from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    data = b"".join(blobs)
    if len(data) != len(blobs) * dim * 4:
        raise InternalServerError("stored face vectors do not match the collection's dimension")
    return np.frombuffer(data, dtype="<f4").reshape(len(blobs), dim)


# --- keeping the in-memory index in step with SQLite -----------------------------

def _index_rows(rows, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fetched (seq, user, vector) rows as (ids, vectors, groups) for the index."""
    k = len(rows)
    seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=k)
    users = np.fromiter((NO_GROUP if r[1] is None else r[1] for r in rows), dtype=np.int64, count=k)
    vectors = (_vectors_from_blobs([r[2] for r in rows], dim) if k
               else np.empty((0, dim), dtype=np.float32))
    return seqs, vectors, users


@dataclass(frozen=True)
class ApproximateSearch:
    """When and how a collection's searches go through an HNSW graph (faceaudit.storage.approximate_index).

    ``threshold``: live faces from which an "auto" collection is searched
    approximately (None: never; "approximate" collections always are).
    ``background``: build graphs on a thread (searches stay exact until the graph
    is ready) rather than inside the search that needs one.
    """

    threshold: int | None = DEFAULT_APPROXIMATE_THRESHOLD
    params: HnswParams = field(default_factory=HnswParams)
    background: bool = True

    def wants_graph(self, mode: str, live: int) -> bool:
        if mode == SEARCH_APPROXIMATE:
            return True
        return mode == SEARCH_AUTO and self.threshold is not None and live >= self.threshold


class _CollectionIndex:
    """One collection's index in this process, and the counters of the database snapshot it matches.

    Refreshed under ``lock`` from the collection row's counters (see the module
    docstring): new rows are appended, rows in the deletion log (or, when too far
    behind, rows no longer present) are removed, the user column is reloaded when
    associations changed; only a new collection rowid or dimension reloads everything.

    When the collection's search mode and size call for it, a graph is loaded from
    ``data_dir/index`` or built (``_graph_work``, on a thread unless configured
    otherwise), caught up with the rows added meanwhile and installed; from then on
    additions go into it as they reach the exact index. Until it is installed,
    searches are exact.
    """

    def __init__(self, approximate: ApproximateSearch, index_dir: Path) -> None:
        self.lock = threading.RLock()  # re-entrant: an inline graph build installs under it
        self.index: ApproximateIndex | None = None
        # (collection rowid, change, delete, assoc counters) the index matches
        self.stamp: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.approximate = approximate
        self.index_dir = index_dir
        self.worker: threading.Thread | None = None
        self.unsaved = 0  # rows added to the graph since it was last written
        self.last_event: str | None = None  # what happened to the graph last (index_stats, tests)
        self.failed_at: tuple[int, int, int, int] | None = None  # stamp of the last failed attempt

    def graph_file(self, collection_rowid: int) -> GraphFile:
        return GraphFile(self.index_dir / f"{collection_rowid}.hnsw")

    def current(self, conn: sqlite3.Connection, row: _CollRow) -> IndexSnapshot | None:
        """The snapshot matching the database snapshot ``row`` was read in, refreshing as needed.

        None if this process's index is already *newer* than that snapshot
        (another thread refreshed from a later one): the caller retries with a
        fresh read transaction.
        """
        with self.lock:
            index = self.index
            wanted = (row.id, row.change_counter)
            if index is not None and self.stamp[:2] > wanted:
                return None
            changed = index is None or self.stamp[:2] != wanted
            dim = row.vector_dim or 0
            if index is None or self.stamp[0] != row.id or index.dim != dim:
                index = self._full_load(conn, row, dim)
            elif changed:
                self._refresh(conn, row, index)
            if changed:
                self.stamp = (row.id, row.change_counter, row.delete_counter, row.assoc_counter)
            exact = index.exact_snapshot()
            if not self.approximate.wants_graph(row.search_mode, exact.live):
                if index.graph is not None:
                    index.drop_graph()  # the file stays for when the collection grows again
                return exact
            if changed or index.graph is None:  # counting tombstones is O(n): only after a change
                self._plan_graph(conn, row, index)
            return index.snapshot()

    def _plan_graph(self, conn: sqlite3.Connection, row: _CollRow, index: ApproximateIndex) -> None:
        """Start loading, building or saving the graph when it is due (lock held)."""
        if self.worker is not None and self.worker.is_alive():
            return
        if self.failed_at == self.stamp:
            return  # the last attempt failed on this very state: try again after the next change
        if index.graph is None:
            task = "load"
        elif index.needs_rebuild():
            task = "rebuild"
        elif self.unsaved > max(10_000, index.graph.count // 10):
            task = "save"
        else:
            return
        sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone()
        args = (task, index, row.id, int(sequence[0]) if sequence else 0)
        if not self.approximate.background:
            self._graph_work(*args)  # self.lock is re-entrant
            return
        self.worker = threading.Thread(target=self._graph_work, args=args, daemon=True,
                                       name=f"faceaudit-graph-{row.id}")
        self.worker.start()

    def _graph_work(self, task: str, index: ApproximateIndex, collection: int, last_sequence: int) -> None:
        """Load or build a graph for ``index`` and install it, or write the installed one.

        A failure (no memory, no disk) leaves searches exact - or on the graph already
        installed - and is kept in ``last_event``; it is not retried until the collection changes."""
        try:
            self._graph_task(task, index, collection, last_sequence)
        except (OSError, MemoryError, RuntimeError) as error:
            with self.lock:
                self.failed_at = self.stamp
                self.last_event = f"failed: {task}: {error}"
            if not self.approximate.background:
                raise

    def _graph_task(self, task: str, index: ApproximateIndex, collection: int, last_sequence: int) -> None:
        file = self.graph_file(collection)
        file.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        params = self.approximate.params
        # One process builds; others wait, then load what it wrote.
        with fasteners.InterProcessLock(str(file.path) + ".lock"):
            if task == "save":
                graph = index.graph
                if graph is not None:
                    file.save(graph, collection)
                    self.unsaved, self.last_event = 0, "saved"
                return
            with self.lock:
                snapshot = index.exact_snapshot()
            graph = None
            if task == "load":
                try:
                    graph = file.load(collection, index.dim, params)
                    if graph.watermark > last_sequence:
                        raise GraphFileError("holds rows the database never had (restored from a backup?)")
                    check_against(graph, snapshot)
                    event = "loaded"
                except GraphFileError as error:
                    graph, event = None, f"rebuilt: {error}"
            else:
                event = "rebuilt: too many deleted rows"
            if graph is None:
                graph = build_graph(snapshot, params)
            with self.lock:
                if self.index is not index:
                    return  # reloaded meanwhile (collection re-created): this graph describes other rows
                added = index.install_graph(graph)
                self.last_event = event
                self.unsaved = added
                save = event != "loaded" or added > 0
            if save:
                file.save(graph, collection)
                self.unsaved = 0

    def close(self) -> None:
        worker = self.worker
        if worker is not None:
            worker.join()

    # internals (called with self.lock held)

    def _full_load(self, conn: sqlite3.Connection, row: _CollRow, dim: int) -> ApproximateIndex:
        rows = conn.execute(
            "SELECT seq, user, vector FROM faces WHERE collection = ? ORDER BY seq",
            (row.id,)).fetchall()
        index = ApproximateIndex(dim)
        index.reset(*_index_rows(rows, dim))
        self.index = index
        return index

    def _refresh(self, conn: sqlite3.Connection, row: _CollRow, index: ApproximateIndex) -> None:
        _, _, seen_delete, seen_assoc = self.stamp
        last_seq = index.exact_snapshot().last_id  # taken before any removal: every row up to it is indexed
        if row.delete_counter != seen_delete:
            if row.delete_counter - seen_delete <= DELETION_LOG_KEEP:
                # the deletion log still holds every deletion since this index
                index.remove([r[0] for r in conn.execute(
                    "SELECT seq FROM face_deletions WHERE collection = ? "
                    "AND delete_counter > ? AND delete_counter <= ?",
                    (row.id, seen_delete, row.delete_counter))])
            else:
                # too far behind: compare rowids (covering index, no vectors read)
                index.retain(np.fromiter(
                    (r[0] for r in conn.execute(
                        "SELECT seq FROM faces WHERE collection = ? AND seq <= ? ORDER BY seq",
                        (row.id, last_seq))),
                    dtype=np.int64))
        new_rows = conn.execute(
            "SELECT seq, user, vector FROM faces WHERE collection = ? AND seq > ? ORDER BY seq",
            (row.id, last_seq)).fetchall()
        if new_rows:
            index.add(*_index_rows(new_rows, index.dim))
            if index.graph is not None:
                self.unsaved += len(new_rows)
        if row.assoc_counter != seen_assoc:
            linked = conn.execute(
                "SELECT seq, user FROM faces WHERE collection = ? AND user IS NOT NULL",
                (row.id,)).fetchall()
            index.set_groups([r[0] for r in linked], [r[1] for r in linked])


# --- the store -------------------------------------------------------------------

class EmbeddedStore(TableStore):
    """FaceStore on SQLite (WAL) in ``data_dir/faceaudit.db`` with an exact in-memory index.

    Safe to share between threads; several processes may open the same
    ``data_dir`` at once. ``synchronous``: "FULL" (default, acknowledged writes
    survive power loss) or "NORMAL" (they survive process crashes only).
    ``approximate``: when collections in mode "auto" switch to their HNSW graph
    (default: from DEFAULT_APPROXIMATE_THRESHOLD faces, built on a thread);
    ``ApproximateSearch(threshold=None)`` keeps them exact.
    """

    def __init__(self, data_dir: str | os.PathLike, *, synchronous: str = "FULL",
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S, region: str = "us-east-1",
                 account_id: str = "000000000000",
                 max_faces_per_collection: int = MAX_FACES_PER_COLLECTION,
                 max_faces_per_user: int = MAX_FACES_PER_USER,
                 approximate: ApproximateSearch | None = None):
        synchronous = synchronous.upper()
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self._synchronous = synchronous
        self._busy_timeout = float(busy_timeout)
        self._arn_prefix = f"arn:aws:rekognition:{region}:{account_id}:collection/"
        self._max_faces_per_collection = int(max_faces_per_collection)
        self._max_faces_per_user = int(max_faces_per_user)
        self._approximate = approximate if approximate is not None else ApproximateSearch()

        self.data_dir = Path(data_dir)
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)  # mkdir's mode is filtered by the umask
        self.db_path = self.data_dir / DB_FILENAME
        self.index_dir = self.data_dir / INDEX_DIRNAME
        # Create the file 0600 ourselves; SQLite gives -wal and -shm the same mode.
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))

        self._closed = False
        self._pid = os.getpid()
        self._connections = ThreadConnections(
            self.db_path, busy_timeout=self._busy_timeout, unavailable=InternalServerError,
            # secure_delete: a deleted face's vector is overwritten with zeros in the file, not merely
            # unlinked from the b-tree, so that DeleteFaces and DeleteCollection erase it
            # (docs/accountability.md)
            pragmas=(f"synchronous = {self._synchronous}", "foreign_keys = ON", "secure_delete = ON"))
        self._indexes: dict[str, _CollectionIndex] = {}
        self._indexes_lock = threading.Lock()
        self._tokens = PageTokens(self._initialise())

    # --- connections and transactions

    def _erase_wal(self) -> None:
        """Fold the write-ahead log into the database and empty it: until then the WAL still
        holds the deleted rows' old page images. Best effort: a long reader can hold frames
        back (SQLite then checkpoints what it can), and the next delete tries again."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            pass

    def _after_fork(self) -> None:
        # Nothing of the parent's locks or caches is usable in a forked child; start afresh
        # (ThreadConnections does the same for the connections, parking the inherited ones).
        self._pid = os.getpid()
        self._indexes = {}
        self._indexes_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise InternalServerError("the store is closed")
        if self._pid != os.getpid():
            self._after_fork()
        return self._connections.get()

    @contextmanager
    def _read(self):
        """A read transaction: every statement in it sees the same snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @contextmanager
    def _write(self):
        """One short write transaction, taking the write lock up front."""
        with immediate_transaction(self._conn()) as conn:
            yield conn

    def _initialise(self) -> bytes:
        with self._write() as conn:
            migrate(conn, MIGRATIONS, describe=str(self.db_path), error=InternalServerError)
            return bytes(conn.execute(
                "SELECT value FROM meta WHERE key = 'token_secret'").fetchone()[0])

    def close(self) -> None:
        self._closed = True
        self._connections.close()
        with self._indexes_lock:
            indexes = list(self._indexes.values())
            self._indexes.clear()
        for index in indexes:
            index.close()

    # --- helpers

    def _collection(self, conn, collection_id: str, *, lock: bool = False) -> _CollRow:
        # lock: nothing to do, a write transaction holds SQLite's one write lock from its start
        row = conn.execute(f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE collection_id = ?",
                           (collection_id,)).fetchone()
        if row is None:
            self._evict(collection_id)
            raise collection_not_found(collection_id)
        return _CollRow(*row)

    def _user_rowid(self, conn, coll: _CollRow, user_id: str) -> int:
        row = conn.execute("SELECT id FROM users WHERE collection = ? AND user_id = ?",
                           (coll.id, user_id)).fetchone()
        if row is None:
            raise user_not_found(user_id, coll.collection_id)
        return row[0]

    @staticmethod
    def _bump(conn, coll: _CollRow, *, faces: int = 0, users: int = 0, deleted: bool = False,
              associations: bool = False, dim: int | None = None) -> None:
        conn.execute(
            "UPDATE collections SET face_count = face_count + ?, user_count = user_count + ?, "
            "change_counter = change_counter + 1, delete_counter = delete_counter + ?, "
            "assoc_counter = assoc_counter + ?, vector_dim = COALESCE(vector_dim, ?) WHERE id = ?",
            (faces, users, int(deleted), int(associations), dim, coll.id))

    def _evict(self, collection_id: str) -> None:
        with self._indexes_lock:
            self._indexes.pop(collection_id, None)
    # --- collections

    def create_collection(self, collection_id: str, face_model_version: str) -> Collection:
        check_new_collection(collection_id, face_model_version)
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO collections (collection_id, arn, face_model_version, created_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (collection_id, self._arn_prefix + collection_id, face_model_version,
                     int(time.time() * 1000)))
            except sqlite3.IntegrityError:
                raise ResourceAlreadyExistsException(
                    f"The collection id: {collection_id} already exists") from None
            coll = self._collection(conn, collection_id)
        self._evict(collection_id)
        return coll.to_collection()

    def delete_collection(self, collection_id: str) -> None:
        validate_collection_id(collection_id)
        try:
            with self._write() as conn:
                coll = self._collection(conn, collection_id)
                conn.execute("DELETE FROM faces WHERE collection = ?", (coll.id,))
                conn.execute("DELETE FROM face_deletions WHERE collection = ?", (coll.id,))
                conn.execute("DELETE FROM users WHERE collection = ?", (coll.id,))
                conn.execute("DELETE FROM collections WHERE id = ?", (coll.id,))
        finally:
            self._evict(collection_id)
        self._erase_wal()
        # Its graph file names the rowid, which is never reused: nothing else will read it.
        _CollectionIndex(self._approximate, self.index_dir).graph_file(coll.id).remove()

    # --- faces

    def add_faces(self, collection_id: str, faces: Sequence[StoredFace]) -> None:
        new = check_new_faces(collection_id, faces)
        rows = [
            (face.face_id, face.image_id, face.external_image_id,
             float(face.bounding_box["Width"]), float(face.bounding_box["Height"]),
             float(face.bounding_box["Left"]), float(face.bounding_box["Top"]),
             float(face.confidence), face.index_faces_model_version, vector.tobytes())
            for face, vector in zip(new.faces, new.vectors)
        ]
        with self._write() as conn:
            coll = self._collection(conn, collection_id)
            if not rows:
                return
            check_room(collection_id, coll.vector_dim, coll.face_count, new, self._max_faces_per_collection)
            try:
                conn.executemany(
                    "INSERT INTO faces (collection, face_id, image_id, external_image_id, "
                    "bbox_width, bbox_height, bbox_left, bbox_top, confidence, "
                    "index_faces_model_version, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(coll.id, *row) for row in rows])
            except sqlite3.IntegrityError:
                raise InvalidParameterException(
                    f"a FaceId to add already exists in collection {collection_id}") from None
            self._bump(conn, coll, faces=len(rows), dim=new.dim)

    def delete_faces(self, collection_id, face_ids):
        validate_collection_id(collection_id)
        face_ids = validate_face_ids(face_ids, FACE_ID_LIST_MAX)
        with self._write() as conn:
            coll = self._collection(conn, collection_id)
            rows = conn.execute(
                "SELECT f.face_id, f.seq, u.user_id FROM faces AS f "
                "LEFT JOIN users AS u ON u.id = f.user "
                "WHERE f.collection = ? AND f.face_id IN (SELECT value FROM json_each(?))",
                (coll.id, _json_list(face_ids))).fetchall()
            change = sort_deletion(face_ids, {face_id: (seq, user) for face_id, seq, user in rows})
            doomed = change.seqs
            if doomed:
                conn.execute("DELETE FROM faces WHERE seq IN (SELECT value FROM json_each(?))",
                             (_json_list(doomed),))
                counter = coll.delete_counter + 1
                conn.executemany(
                    "INSERT INTO face_deletions (collection, delete_counter, seq) VALUES (?, ?, ?)",
                    [(coll.id, counter, seq) for seq in doomed])
                conn.execute("DELETE FROM face_deletions WHERE collection = ? AND delete_counter <= ?",
                             (coll.id, counter - DELETION_LOG_KEEP))
                self._bump(conn, coll, faces=-len(doomed), deleted=True)
        if change.changed:
            self._erase_wal()
        return change.changed, change.unsuccessful
    # --- search

    def _with_index(self, collection_id: str, work):
        """Run ``work(conn, coll, snapshot)`` in a read transaction whose snapshot the index matches."""
        for _ in range(100):
            with self._read() as conn:
                coll = self._collection(conn, collection_id)
                with self._indexes_lock:
                    index = self._indexes.get(collection_id)
                    if index is None:
                        index = self._indexes[collection_id] = _CollectionIndex(self._approximate, self.index_dir)
                snapshot = index.current(conn, coll)
                if snapshot is not None:
                    return work(conn, coll, snapshot)
            # This process's index is newer than our snapshot: take a newer one.
        raise InternalServerError("could not obtain a consistent view of the search index")

    def index_stats(self, collection_id: str) -> dict:
        """The (refreshed) in-memory index: {'faces': n, 'dim': d, 'mode': the collection's search
        mode, 'searching': "exact" or "approximate" (what a search runs on now), 'graph': its nodes,
        tombstones and watermark or None, 'graph_event': how it was last loaded, built or saved}."""
        validate_collection_id(collection_id)

        def stats(conn, coll: _CollRow, snap: IndexSnapshot) -> dict:
            graph = getattr(snap, "graph", None)
            with self._indexes_lock:
                holder = self._indexes.get(collection_id)
            index = holder.index if holder is not None else None
            return {"faces": snap.live, "dim": snap.dim, "mode": coll.search_mode,
                    "searching": SEARCH_EXACT if graph is None else SEARCH_APPROXIMATE,
                    "graph": None if graph is None or index is None else
                    {"nodes": graph.count, "dead": index.dead, "watermark": graph.watermark},
                    "graph_event": holder.last_event if holder is not None else None}

        return self._with_index(collection_id, stats)

    def wait_for_index(self, collection_id: str) -> None:
        """Wait until any graph being loaded, built or saved for the collection in this process is done."""
        with self._indexes_lock:
            holder = self._indexes.get(collection_id)
        if holder is not None:
            holder.close()

    def search_mode(self, collection_id: str) -> str:
        validate_collection_id(collection_id)
        with self._read() as conn:
            return self._collection(conn, collection_id).search_mode

    def set_search_mode(self, collection_id: str, mode: str) -> None:
        validate_collection_id(collection_id)
        validate_search_mode(mode)
        with self._write() as conn:
            coll = self._collection(conn, collection_id)
            # Read with the collection row by every search: no counter to bump, no index to refresh.
            conn.execute("UPDATE collections SET search_mode = ? WHERE id = ?", (mode, coll.id))

    def search(self, collection_id, vector, max_results, max_distance=None,
               exclude_face_ids=(), user_ids=None):
        query = check_face_query(collection_id, vector, max_results, max_distance, exclude_face_ids, user_ids)

        def work(conn, coll, snapshot: IndexSnapshot):
            if snapshot.live == 0:
                return []
            check_query_dim(query.vector, snapshot.dim)
            excluded_seqs: list[int] = []
            if query.exclude:
                excluded_seqs = [r[0] for r in conn.execute(
                    "SELECT seq FROM faces WHERE collection = ? AND face_id IN "
                    "(SELECT value FROM json_each(?))", (coll.id, _json_list(query.exclude)))]
            groups = None
            if query.user_ids is not None:
                groups = [r[0] for r in conn.execute(
                    "SELECT id FROM users WHERE collection = ? AND user_id IN "
                    "(SELECT value FROM json_each(?))", (coll.id, _json_list(query.user_ids)))]
            hits = snapshot.nearest(query.vector, query.k, query.max_distance,
                                    exclude_ids=excluded_seqs, groups=groups)
            if len(hits.ids) == 0:
                return []
            rows = conn.execute(
                f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.seq IN "
                "(SELECT value FROM json_each(?))", (_json_list(hits.ids.tolist()),)).fetchall()
            return [(_face_from_row(r), d) for r, d in ranked_face_rows(hits, {r[0]: r for r in rows}, query.k)]

        return self._with_index(collection_id, work)

    def search_users(self, collection_id, vector, max_results, max_distance=None,
                     exclude_user_ids=()):
        query = check_user_query(collection_id, vector, max_results, max_distance, exclude_user_ids)

        def work(conn, coll, snapshot: IndexSnapshot):
            if snapshot.live == 0:
                return []
            check_query_dim(query.vector, snapshot.dim)
            excluded_rowids: list[int] = []
            if query.exclude:
                excluded_rowids = [r[0] for r in conn.execute(
                    "SELECT id FROM users WHERE collection = ? AND user_id IN "
                    "(SELECT value FROM json_each(?))", (coll.id, _json_list(query.exclude)))]
            hits = snapshot.nearest_groups(query.vector, query.k, query.max_distance,
                                           exclude_groups=excluded_rowids)
            if len(hits.ids) == 0:
                return []
            names = dict(conn.execute(
                "SELECT id, user_id FROM users WHERE id IN (SELECT value FROM json_each(?))",
                (_json_list(hits.ids.tolist()),)).fetchall())
            return ranked_users(hits, names, query.k)

        return self._with_index(collection_id, work)

    # --- users

    def _collections_after(self, conn, after: int, limit: int) -> list[_CollRow]:
        return [_CollRow(*r) for r in conn.execute(
            f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit)).fetchall()]

    def _faces_after(self, conn, coll: _CollRow, after: int, limit: int, user_ref: int | None,
                     face_ids: list[str] | None) -> list[tuple[int, StoredFace]]:
        sql = f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.collection = ? AND f.seq > ?"
        params: list = [coll.id, after]
        if user_ref is not None:
            sql += " AND f.user = ?"
            params.append(user_ref)
        if face_ids is not None:
            sql += " AND f.face_id IN (SELECT value FROM json_each(?))"
            params.append(_json_list(face_ids))
        sql += " ORDER BY f.seq LIMIT ?"
        params.append(limit)
        return [(r[0], _face_from_row(r)) for r in conn.execute(sql, params).fetchall()]

    def _faces_by_id(self, conn, coll: _CollRow, face_ids: list[str]) -> list[StoredFace]:
        return [_face_from_row(r) for r in conn.execute(
            f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE f.collection = ? "
            "AND f.face_id IN (SELECT value FROM json_each(?))", (coll.id, _json_list(face_ids))).fetchall()]

    def _insert_user(self, conn, coll: _CollRow, user_id: str) -> None:
        try:
            conn.execute("INSERT INTO users (collection, user_id) VALUES (?, ?)", (coll.id, user_id))
        except sqlite3.IntegrityError:
            raise user_exists(user_id, coll.collection_id) from None
        self._bump(conn, coll, users=1)

    def _remove_user(self, conn, coll: _CollRow, user_ref: int) -> None:
        unlinked = conn.execute("UPDATE faces SET user = NULL WHERE user = ?", (user_ref,)).rowcount
        conn.execute("DELETE FROM users WHERE id = ?", (user_ref,))
        self._bump(conn, coll, users=-1, associations=unlinked > 0)

    def _user_has_faces(self, conn, user_ref: int) -> bool:
        return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM faces WHERE user = ?)", (user_ref,)).fetchone()[0])

    def _users_after(self, conn, coll: _CollRow, after: int, limit: int) -> list[tuple[int, str, bool]]:
        return conn.execute(
            "SELECT u.id, u.user_id, EXISTS (SELECT 1 FROM faces AS f WHERE f.user = u.id) "
            "FROM users AS u WHERE u.collection = ? AND u.id > ? ORDER BY u.id LIMIT ?",
            (coll.id, after, limit)).fetchall()

    def _user_vectors(self, conn, coll: _CollRow, user_ref: int) -> np.ndarray:
        # Faces exist, so the first one fixed vector_dim; were it missing, 0 makes
        # _vectors_from_blobs report the store as inconsistent.
        return _vectors_from_blobs([r[0] for r in conn.execute("SELECT vector FROM faces WHERE user = ?",
                                                               (user_ref,))], coll.vector_dim or 0)

    def _faces_for_users_op(self, conn, coll: _CollRow, face_ids: list[str]) -> dict[str, FaceOwner]:
        rows = conn.execute(
            "SELECT f.face_id, f.seq, f.user, u.user_id, f.vector FROM faces AS f "
            "LEFT JOIN users AS u ON u.id = f.user "
            "WHERE f.collection = ? AND f.face_id IN (SELECT value FROM json_each(?))",
            (coll.id, _json_list(face_ids))).fetchall()
        return {r[0]: FaceOwner(r[1], r[2], r[3], np.frombuffer(r[4], dtype="<f4")) for r in rows}

    def _set_user(self, conn, coll: _CollRow, user_ref: int | None, seqs: list[int]) -> None:
        conn.execute("UPDATE faces SET user = ? WHERE seq IN (SELECT value FROM json_each(?))",
                     (user_ref, _json_list(seqs)))
        self._bump(conn, coll, associations=True)
