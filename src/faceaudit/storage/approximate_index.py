"""Approximate search for large collections: an HNSW graph (faiss) proposes, exact distances decide.

``ApproximateIndex`` is a ``VectorIndex`` that keeps an ``ExactIndex`` (the
vectors, groups and live rows, as always) and, once it is given one, an HNSW
graph over the same rows. A search asks the graph for ``ef`` candidates (at
least a few times k), drops the rows that are no longer alive in the exact
snapshot (deleted rows stay in the graph as tombstones: faiss's HNSW cannot
remove a node, and filtering them is cheaper than a rebuild), computes their
distances exactly in float64 and cuts them to k and the radius exactly as the
exact index does. So every distance returned is exact and the radius means
what it always meant; the only thing approximate is *which* rows were looked
at: a true neighbour the graph did not propose is missed.

Why faiss's HNSW (docs/scale.md has the figures): on synthetic faces as hard as
real ones, an HNSW graph reaches recall@10 of 0.98 and more where IVF lists need
hundreds of probes for 0.96 and usearch's int8 graph stops near 0.91; at equal
parameters faiss's and usearch's float32 graphs find the same neighbours, and
faiss builds its graph in half the time. It is a maintained PyPI wheel, and it
reads and writes its index as one byte buffer, so the file carries its own checksum.

Where exact stays
-----------------
Searches restricted to a few UserIDs' faces (``groups``), SearchUsers
(``nearest_groups``) and searches asking for a large share of the collection
(score normalization asks for every face within a radius) run on the exact
index: they are small or need every row anyway. A graph that proposes fewer
than k live rows (many tombstones nearby) also falls back to exact.

Files
-----
``GraphFile`` writes one file per collection: a JSON header (what the graph
holds: collection rowid, dimension, parameters, the highest row id it holds -
its watermark - and the SHA-256 of the faiss bytes) and the faiss index. It is
written to a temporary name and renamed, so a crash leaves the old file or the
new one, never half of one; a file whose checksum, parameters, dimension or
sampled vectors do not match is refused and the graph is rebuilt from the
database, which stays the truth. A file behind the database is caught up by
adding the rows above its watermark; rows deleted since are tombstones.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from faceaudit.storage.vector_index import (
    _NO_HITS,
    ExactIndex,
    ExactSnapshot,
    Hits,
    IndexSnapshot,
    VectorIndex,
    _sorted_hits,
)

GRAPH_FILE_MAGIC = b"faceaudit-hnsw\n"
GRAPH_FILE_FORMAT = 1
# Rebuild the graph once tombstones are this share of its nodes.
REBUILD_DEAD_FRACTION = 0.5
# Use the exact index when a search asks for at least this share of the live rows.
EXACT_SHARE = 0.25
# How far past the k-th float32 squared distance a candidate is still re-ranked exactly
# (relative, plus an absolute floor for distances near 0); float32 rounding is ~1e-5 of it at most.
RERANK_SLACK, RERANK_SLACK_ABS = 1e-3, 1e-6
_SAMPLED_ROWS = 64  # rows whose stored vectors are compared with the database when a file is loaded


@dataclass(frozen=True)
class HnswParams:
    """The graph's shape and how hard a search looks (measured in benchmarks/search.py)."""

    m: int = 32                 # neighbours per node (64 on the bottom layer)
    # candidates kept while inserting: 128 builds in 2.1x the time of 64 and reaches recall@10
    # 0.98 at 1M faces from ef_search 224 instead of about 300 (docs/scale.md)
    ef_construction: int = 128
    # candidates kept while searching, at least: at 1M faces, recall@10 0.985 at 2.5 ms CPU p50 on
    # idle cores (320: 0.991 at 3.3 ms; 192: 0.978)
    ef_search: int = 224
    overfetch: int = 4          # candidates asked of the graph per result wanted

    def candidates(self, k: int) -> int:
        """How many candidates a top-k search asks the graph for."""
        return max(self.ef_search, self.overfetch * k)


class _ReadWriteLock:
    """Many searches at once, or one change: faiss's HNSW may be searched concurrently but not
    searched while a node is being inserted."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    def acquire_read(self) -> None:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
            self._cond.notify_all()


class HnswGraph:
    """A faiss HNSW graph over (row id, vector) pairs, labelled by row id; append-only.

    ``watermark`` is the highest row id added (rows are added in ascending order).
    Thread-safe: searches share a lock, additions take it alone.
    """

    def __init__(self, dim: int, params: HnswParams, index=None, watermark: int = 0):
        import faiss

        self.dim = dim
        self.params = params
        if index is None:
            hnsw = faiss.IndexHNSWFlat(dim, params.m)
            hnsw.hnsw.efConstruction = params.ef_construction
            index = faiss.IndexIDMap2(hnsw)
        # Set on the graph, not passed per search: faiss's per-call SearchParametersHNSW path
        # measured several times slower here. A search for more than ef rows widens it to k.
        inner: Any = faiss.downcast_index(index.index)
        inner.hnsw.efSearch = params.ef_search
        self._index = index
        self._lock = _ReadWriteLock()
        self.watermark = watermark

    @property
    def count(self) -> int:
        """Nodes in the graph, tombstones included."""
        return int(self._index.ntotal)

    def add(self, ids: ArrayLike, vectors: np.ndarray) -> None:
        new_ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(new_ids) == 0:
            return
        if int(new_ids[0]) <= self.watermark:
            raise ValueError("graph rows must be added in ascending order, above its watermark")
        rows = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(new_ids), self.dim)
        self._lock.acquire_write()
        try:
            self._index.add_with_ids(rows, new_ids)
            self.watermark = int(new_ids[-1])
        finally:
            self._lock.release_write()

    def search(self, query: np.ndarray, candidates: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ids of up to ``candidates`` rows near ``query`` (dim,), nearest first, with the
        squared distances faiss computed for them (float32, from the same float32 vectors)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        self._lock.acquire_read()
        try:
            sq_distances, labels = self._index.search(q, candidates)
        finally:
            self._lock.release_read()
        found = labels[0] >= 0
        return labels[0][found], sq_distances[0][found]

    def stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors the graph holds for these row ids (to check a loaded file against the database)."""
        self._lock.acquire_read()
        try:
            return np.stack([self._index.reconstruct(int(i)) for i in ids]) if len(ids) else \
                np.empty((0, self.dim), dtype=np.float32)
        finally:
            self._lock.release_read()

    def to_bytes(self) -> tuple[np.ndarray, int, int]:
        """The faiss bytes, with the watermark and node count they hold (read together)."""
        import faiss

        self._lock.acquire_read()
        try:
            return faiss.serialize_index(self._index), self.watermark, self.count
        finally:
            self._lock.release_read()


class GraphFileError(Exception):
    """Why a graph file cannot be used (the caller rebuilds the graph from the database)."""


class GraphFile:
    """One collection's graph on disk: magic, header length, JSON header, faiss bytes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def save(self, graph: HnswGraph, collection: int) -> None:
        payload, watermark, count = graph.to_bytes()
        header = json.dumps({
            "format": GRAPH_FILE_FORMAT, "collection": collection, "dim": graph.dim,
            "watermark": watermark, "count": count, "params": asdict(graph.params),
            "sha256": hashlib.sha256(payload.data).hexdigest(),
        }).encode()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(GRAPH_FILE_MAGIC + len(header).to_bytes(8, "little") + header)
            out.write(payload.data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)  # readers see the old file or the new one, never half

    def load(self, collection: int, dim: int, params: HnswParams) -> HnswGraph:
        """The graph in the file; GraphFileError if it is missing, damaged or not this collection's."""
        import faiss

        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise GraphFileError("no graph file") from None
        if not data.startswith(GRAPH_FILE_MAGIC):
            raise GraphFileError("not a graph file")
        start = len(GRAPH_FILE_MAGIC)
        length = int.from_bytes(data[start:start + 8], "little")
        try:
            header = json.loads(data[start + 8:start + 8 + length])
        except ValueError:
            raise GraphFileError("unreadable header") from None
        payload = memoryview(data)[start + 8 + length:]
        if not isinstance(header, dict) or header.get("format") != GRAPH_FILE_FORMAT:
            raise GraphFileError("unknown file format")
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise GraphFileError("checksum mismatch")
        if header.get("collection") != collection or header.get("dim") != dim:
            raise GraphFileError("another collection's graph")
        built = header.get("params")
        # Only the graph's shape must match: ef_search and overfetch are how hard a search
        # looks, and a change to them must not cost a rebuild (minutes at a million faces).
        if not isinstance(built, dict) or (built.get("m"), built.get("ef_construction")) != \
                (params.m, params.ef_construction):
            raise GraphFileError("built with other parameters")
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as error:
            raise GraphFileError(f"faiss could not read it: {error}") from None
        if int(index.ntotal) != header.get("count") or index.d != dim:
            raise GraphFileError("node count differs from the header")
        return HnswGraph(dim, params, index=index, watermark=int(header["watermark"]))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        Path(str(self.path) + ".lock").unlink(missing_ok=True)


def check_against(graph: HnswGraph, snapshot: ExactSnapshot, seed: int = 0) -> None:
    """GraphFileError unless the graph's vectors for a sample of live rows at or below its
    watermark equal the database's (``snapshot`` was loaded from it)."""
    held = snapshot.ids <= graph.watermark
    if snapshot.alive is not None:
        held &= snapshot.alive
    positions = np.flatnonzero(held)
    if len(positions) == 0:
        return
    rng = np.random.default_rng(seed)
    sample = rng.choice(positions, size=min(_SAMPLED_ROWS, len(positions)), replace=False)
    try:
        stored = graph.stored_vectors(snapshot.ids[sample])
    except RuntimeError:  # faiss: a live row's id is not in the graph
        raise GraphFileError("the graph lacks rows the database holds") from None
    if not np.array_equal(stored, snapshot.matrix[sample]):
        raise GraphFileError("the graph's vectors differ from the database's")


def dead_in_graph(graph: HnswGraph, snapshot: ExactSnapshot) -> int:
    """Tombstones: graph nodes whose rows are no longer live."""
    held = snapshot.ids <= graph.watermark
    if snapshot.alive is not None:
        held &= snapshot.alive
    return graph.count - int(held.sum())


def build_graph(snapshot: ExactSnapshot, params: HnswParams) -> HnswGraph:
    """A new graph over the live rows of ``snapshot`` (minutes at a million rows)."""
    graph = HnswGraph(snapshot.dim, params)
    positions = np.arange(snapshot.n) if snapshot.alive is None else np.flatnonzero(snapshot.alive)
    step = 65536  # bounds the contiguous float32 copy faiss needs
    for start in range(0, len(positions), step):
        chunk = positions[start:start + step]
        graph.add(snapshot.ids[chunk], snapshot.matrix[chunk])
    return graph


def catch_up(graph: HnswGraph, snapshot: ExactSnapshot) -> int:
    """Add the live rows of ``snapshot`` above the graph's watermark; how many were added."""
    start = int(np.searchsorted(snapshot.ids, graph.watermark, side="right"))
    positions = np.arange(start, snapshot.n)
    if snapshot.alive is not None:
        positions = positions[snapshot.alive[start:]]
    if len(positions):
        graph.add(snapshot.ids[positions], snapshot.matrix[positions])
    return len(positions)


class ApproximateSnapshot(IndexSnapshot):
    """An exact snapshot plus the graph that proposes candidates for it.

    The graph may hold rows this snapshot does not (added later, or deleted):
    only rows alive in the exact snapshot are ever returned.
    """

    __slots__ = ("dim", "exact", "graph")

    def __init__(self, exact: ExactSnapshot, graph: HnswGraph):
        self.exact = exact
        self.graph = graph
        self.dim = exact.dim

    @property
    def live(self) -> int:
        return self.exact.live

    def nearest(self, query: ArrayLike, k: int, max_distance: float | None = None,
                exclude_ids: Iterable[int] = (), groups: Iterable[int] | None = None) -> Hits:
        exact = self.exact
        excluded = np.asarray(list(exclude_ids), dtype=np.int64)
        wanted = k + len(excluded)
        candidates = self.graph.params.candidates(wanted)
        if groups is not None or candidates >= EXACT_SHARE * exact.live:
            return exact.nearest(query, k, max_distance, excluded.tolist(), groups)
        if exact.live == 0:
            return _NO_HITS
        q = np.asarray(query, dtype=np.float32)
        labels, sq_distances = self.graph.search(q, candidates)
        positions, keep = exact.positions_and_presence(labels)  # keep: rows this snapshot holds
        if exact.alive is not None:
            keep &= exact.alive[positions]
        if len(excluded):
            keep &= ~np.isin(labels, excluded)
        positions, sq_distances = positions[keep], sq_distances[keep]
        if len(positions) < min(k, exact.live - len(excluded)):
            # too many tombstones near the query: the graph cannot vouch for k rows
            return exact.nearest(query, k, max_distance, excluded.tolist(), groups)
        if len(positions) > k:
            # Re-rank only the rows that can be in the exact top k. faiss computed these
            # squared distances in float32 from the very vectors re-ranked here: off by a
            # relative few 1e-6 at most, far inside RERANK_SLACK, so no row past the cut can
            # beat (or tie) the k-th. Gathering every candidate was a tenth of a 1M search.
            kth = float(np.partition(sq_distances, k - 1)[k - 1])
            near = sq_distances <= kth * (1.0 + RERANK_SLACK) + RERANK_SLACK_ABS
            positions = positions[near]
        return _sorted_hits(exact.ids[positions], exact.exact_distances(positions, q), k, max_distance)

    def nearest_groups(self, queries: ArrayLike, k: int, max_distance: float | None = None,
                       exclude_groups: Iterable[int] = ()) -> Hits:
        return self.exact.nearest_groups(queries, k, max_distance, exclude_groups)


class ApproximateIndex(VectorIndex):
    """An ExactIndex plus, once ``install_graph`` is called, an HNSW graph kept in step on additions.

    Removals only leave tombstones in the graph (``dead`` counts them);
    ``needs_rebuild`` says when they are too many. Not thread-safe, like
    ExactIndex: the store changes it under a lock.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.exact = ExactIndex(dim)
        self.graph: HnswGraph | None = None

    def snapshot(self) -> IndexSnapshot:
        exact = self.exact.snapshot()
        return exact if self.graph is None else ApproximateSnapshot(exact, self.graph)

    def exact_snapshot(self) -> ExactSnapshot:
        return self.exact.snapshot()

    def install_graph(self, graph: HnswGraph) -> int:
        """Use ``graph`` from now on, after adding the rows it lacks; how many it lacked."""
        added = catch_up(graph, self.exact.snapshot())
        self.graph = graph
        return added

    def drop_graph(self) -> None:
        self.graph = None

    @property
    def dead(self) -> int:
        return 0 if self.graph is None else dead_in_graph(self.graph, self.exact.snapshot())

    def needs_rebuild(self) -> bool:
        return self.graph is not None and self.dead > REBUILD_DEAD_FRACTION * max(1, self.graph.count)

    def reset(self, ids: ArrayLike, vectors: np.ndarray, groups: ArrayLike) -> None:
        self.exact.reset(ids, vectors, groups)
        self.graph = None  # a reset replaces every row: the graph describes others

    def add(self, ids: ArrayLike, vectors: np.ndarray, groups: ArrayLike) -> None:
        self.exact.add(ids, vectors, groups)
        if self.graph is not None:
            self.graph.add(ids, vectors)

    def remove(self, ids: ArrayLike) -> None:
        self.exact.remove(ids)

    def retain(self, ids: ArrayLike) -> None:
        self.exact.retain(ids)

    def set_groups(self, ids: ArrayLike, groups: ArrayLike) -> None:
        self.exact.set_groups(ids, groups)
