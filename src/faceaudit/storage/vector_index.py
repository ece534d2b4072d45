"""The in-memory vector index behind a FaceStore: exact Euclidean search, plain numpy.

A store keeps one index per collection and feeds it rows it read from its
database (``reset``, ``add``, ``remove``, ``retain``, ``set_groups``); searches
run on immutable snapshots (``snapshot()``), so a store can refresh the index
under a lock while other threads keep searching the snapshot they took. Rows
are identified by integer ids that increase with insertion (the store's
rowids) and may belong to a group (a UserID's rowid; -1 = none).

``VectorIndex`` / ``IndexSnapshot`` are the interface; ``ExactIndex`` is the
exact implementation. ``faceaudit.storage.approximate_index.ApproximateIndex``
wraps one and adds an HNSW graph that proposes candidates for large collections
(the store switches to it above a size, per collection: docs/scale.md); the
candidates' distances still come from here, exactly.

Why exact search (by default, and always for audits)
----------------------------------------------------
faceaudit exists to measure and publish its own error rates, including per
demographic group. An approximate index (HNSW, IVF, PQ) adds misses of its own,
and nothing guarantees that those misses are spread evenly across groups - they
depend on how each group's embeddings cluster - so an ANN index would bias
exactly the numbers we audit. Brute force is also cheap at this scale: one
float32 matrix-vector product and a partial selection (``np.partition``), then
the few candidates within the float32 error bound (``error_bound``) of the k-th
are re-ranked with float64 distances, so the float32 shortcut never changes the
answer. Measured cost (benchmarks/search_latency.py, 128-D, on a 2-vCPU VM that
was busy with other jobs, load ~5; results in benchmarks/results/search_latency.json):
a top-10 search including its records takes 0.34 ms p50 / 1.2 ms p95 at 10k
faces and 4.5 ms / 8.7 ms at 100k (the numpy pass alone: 0.2 and 3.4 ms -
memory-bound over 51 MB of float32); the index costs 4*dim + 25 bytes per face
of RAM (~53 MB per 100k faces).

Answers and ties
----------------
``nearest`` and ``nearest_groups`` return every row (group) that could be among
the k nearest, with its exact float64 distance: at least the k nearest, plus
any row tied with the k-th. The caller breaks ties by its own key (FaceId,
UserId) and cuts to k, which this index cannot do because it never sees those keys.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from faceaudit.errors import InternalServerError

NO_GROUP = -1
# Deleted rows stay in place (marked dead) until they are this share of the index.
COMPACT_DEAD_FRACTION = 0.25
_MIN_CAPACITY = 64
_NORM_CHUNK = 8192  # rows per float64 block when computing norms (bounds the temporary)


def error_bound(dim: int, max_sqnorm: float, query_sqnorm: float) -> float:
    """Upper bound on |float32-BLAS squared distance - exact squared distance|.

    The float32 dot product of d terms errs by at most about d*u*|x||q|
    (u = 2**-24); the norms are computed in float64. Four times that bound, in
    squared-distance units, is used as the margin within which candidates are
    re-ranked with exact float64 distances, so the float32 shortcut can never
    change which rows are returned.
    """
    return 4.0 * dim * 2.0 ** -24 * (max_sqnorm + query_sqnorm) + 1e-30


class Hits(NamedTuple):
    """Row ids (or group ids) and their exact distances, nearest first (ties by id)."""

    ids: np.ndarray  # int64
    distances: np.ndarray  # float64


_NO_HITS = Hits(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


def _sorted_hits(ids: np.ndarray, distances: np.ndarray, k: int, max_distance: float | None) -> Hits:
    """Within ``max_distance``, then only those no farther than the k-th nearest (ties kept)."""
    if max_distance is not None:
        inside = distances <= max_distance
        ids, distances = ids[inside], distances[inside]
    if len(ids) > k:
        kth = np.partition(distances, k - 1)[k - 1]
        near = distances <= kth
        ids, distances = ids[near], distances[near]
    order = np.lexsort((ids, distances))
    return Hits(ids[order].astype(np.int64), distances[order].astype(np.float64))


class IndexSnapshot(abc.ABC):
    """An immutable state of an index, safe to search from any thread."""

    dim: int

    @property
    @abc.abstractmethod
    def live(self) -> int:
        """How many rows (not removed) the snapshot holds."""

    @abc.abstractmethod
    def nearest(self, query: ArrayLike, k: int, max_distance: float | None = None,
                exclude_ids: Iterable[int] = (), groups: Iterable[int] | None = None) -> Hits:
        """Rows nearest to ``query`` (dim,): the k nearest and any tied with the k-th, only
        within ``max_distance``, never ``exclude_ids`` (which must be present), only rows of
        ``groups`` when given."""

    @abc.abstractmethod
    def nearest_groups(self, queries: ArrayLike, k: int, max_distance: float | None = None,
                       exclude_groups: Iterable[int] = ()) -> Hits:
        """Groups ranked by the distance of their closest row to the closest of ``queries``
        (dim,) or (m, dim): the k nearest and any tied with the k-th. Rows without a group
        never match."""


class VectorIndex(abc.ABC):
    """A mutable index; not thread-safe (the store changes it under a lock and hands out snapshots)."""

    @abc.abstractmethod
    def snapshot(self) -> IndexSnapshot:
        """The current state; later changes never alter a snapshot already taken."""

    @abc.abstractmethod
    def reset(self, ids: ArrayLike, vectors: np.ndarray, groups: ArrayLike) -> None:
        """Replace everything with these rows (ids ascending)."""

    @abc.abstractmethod
    def add(self, ids: ArrayLike, vectors: np.ndarray, groups: ArrayLike) -> None:
        """Append rows whose ids are all above every id already added."""

    @abc.abstractmethod
    def remove(self, ids: ArrayLike) -> None:
        """Drop these rows; ids not in the index are ignored."""

    @abc.abstractmethod
    def retain(self, ids: ArrayLike) -> None:
        """Drop every row whose id is not in ``ids``."""

    @abc.abstractmethod
    def set_groups(self, ids: ArrayLike, groups: ArrayLike) -> None:
        """Rows ``ids`` now belong to ``groups``; every other row to none."""


class ExactSnapshot(IndexSnapshot):
    """Rows [0, n) of ExactIndex's buffers; removed rows stay with ``alive`` False (None: all alive)."""

    __slots__ = ("_live", "alive", "dim", "groups", "ids", "matrix", "max_sqnorm", "sqnorms")

    def __init__(self, dim: int, ids: np.ndarray, matrix: np.ndarray, sqnorms: np.ndarray,
                 groups: np.ndarray, alive: np.ndarray | None):
        self.dim = dim
        self.ids = ids            # int64 (n,), ascending
        self.matrix = matrix      # float32 (n, dim)
        self.sqnorms = sqnorms    # float64 (n,)
        self.groups = groups      # int64 (n,), NO_GROUP for none
        self.alive = alive        # bool (n,) or None
        self._live = len(ids) if alive is None else int(alive.sum())
        self.max_sqnorm = float(sqnorms.max()) if len(sqnorms) else 0.0

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def live(self) -> int:
        return self._live

    @property
    def last_id(self) -> int:
        return int(self.ids[-1]) if len(self.ids) else 0

    def alive_mask(self) -> np.ndarray:
        """A fresh (writable) mask of the live rows."""
        return np.ones(self.n, dtype=bool) if self.alive is None else self.alive.copy()

    def positions(self, ids: ArrayLike) -> np.ndarray:
        """Positions of ids known to be in the index."""
        wanted = np.asarray(ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, wanted), max(self.n - 1, 0))
        if self.n == 0 or not np.array_equal(self.ids[pos], wanted):
            raise InternalServerError("search index out of step with the database")
        return pos

    def positions_if_present(self, ids: ArrayLike) -> np.ndarray:
        positions, present = self.positions_and_presence(ids)
        return positions[present]

    def positions_and_presence(self, ids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """For each id, a row position and whether that row holds the id (so callers can keep
        values that travel with the ids, such as distances, in step)."""
        wanted = np.asarray(ids, dtype=np.int64)
        if self.n == 0 or len(wanted) == 0:
            return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, wanted), self.n - 1)
        return pos, self.ids[pos] == wanted

    # -- the search kernels -----------------------------------------------------------
    def _approx_sq_distances(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        """float32 squared distances (min over query rows) and their error bound."""
        q2 = np.atleast_2d(query)
        q64 = q2.astype(np.float64)
        qq = np.einsum("ij,ij->i", q64, q64)
        if len(q2) == 1:
            # einsum, not BLAS: single-threaded, so concurrent searches do not
            # oversubscribe the cores with BLAS worker threads (measured: at
            # 100k faces on 2 busy vCPUs, 2.7 ms p50 against 12 ms for
            # multi-threaded sgemv; at 10k both are well under 1 ms).
            dots = np.einsum("ij,j->i", self.matrix, q2[0]).astype(np.float64)[:, None]
        else:
            dots = (self.matrix @ q2.T).astype(np.float64)        # (n, m)
        approx = (self.sqnorms[:, None] + qq[None, :] - 2.0 * dots).min(axis=1)
        return approx, error_bound(self.dim, self.max_sqnorm, float(qq.max()))

    def exact_distances(self, positions: np.ndarray, query: np.ndarray) -> np.ndarray:
        """float64 Euclidean distances of rows ``positions`` to query (dim,) or min over (m, dim)."""
        q = np.atleast_2d(query).astype(np.float64)
        out = np.empty(len(positions), dtype=np.float64)
        step = max(1, 65536 // len(q))  # bounds the float64 temporary
        for start in range(0, len(positions), step):
            rows = self.matrix[positions[start:start + step]].astype(np.float64)
            diff = rows[:, None, :] - q[None, :, :]
            out[start:start + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)).min(axis=1)
        return out

    def candidates(self, query: np.ndarray, valid: np.ndarray, k: int, max_distance: float | None) -> np.ndarray:
        """Row positions that may be among the exact top k; to be re-ranked exactly.

        With eps bounding the float32 error, the true k-th smallest squared
        distance T is <= (k-th smallest approximate) + eps, and every row whose
        exact squared distance is <= T has an approximate one <= kth + 2*eps.
        """
        approx, eps = self._approx_sq_distances(query)
        if max_distance is not None:
            valid = valid & (approx <= max_distance * max_distance + eps)
        positions = np.flatnonzero(valid)
        if len(positions) > k:
            values = approx[positions]
            kth = np.partition(values, k - 1)[k - 1]
            positions = positions[values <= kth + 2 * eps]
        return positions

    def nearest(self, query: ArrayLike, k: int, max_distance: float | None = None,
                exclude_ids: Iterable[int] = (), groups: Iterable[int] | None = None) -> Hits:
        if self.live == 0:
            return _NO_HITS
        q = np.asarray(query, dtype=np.float32)
        valid = self.alive_mask()
        excluded = list(exclude_ids)
        if excluded:
            valid[self.positions(excluded)] = False
        if groups is not None:
            valid &= np.isin(self.groups, np.asarray(list(groups), dtype=np.int64))
        positions = self.candidates(q, valid, k, max_distance)
        if len(positions) == 0:
            return _NO_HITS
        return _sorted_hits(self.ids[positions], self.exact_distances(positions, q), k, max_distance)

    def nearest_groups(self, queries: ArrayLike, k: int, max_distance: float | None = None,
                       exclude_groups: Iterable[int] = ()) -> Hits:
        if self.live == 0:
            return _NO_HITS
        q = np.asarray(queries, dtype=np.float32)
        valid = self.groups != NO_GROUP
        if self.alive is not None:
            valid &= self.alive
        excluded = list(exclude_groups)
        if excluded:
            valid &= ~np.isin(self.groups, np.asarray(excluded, dtype=np.int64))
        positions = np.flatnonzero(valid)
        if len(positions) == 0:
            return _NO_HITS
        approx, eps = self._approx_sq_distances(q)
        groups = self.groups[positions]
        values = approx[positions]
        # each group's smallest approximate distance
        order = np.lexsort((values, groups))
        groups_sorted = groups[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = groups_sorted[1:] != groups_sorted[:-1]
        group_ids = groups_sorted[first]
        group_best = values[order][first]
        keep = np.ones(len(group_ids), dtype=bool)
        if max_distance is not None:
            keep &= group_best <= max_distance * max_distance + eps
        if keep.sum() > k:
            kth = np.partition(group_best[keep], k - 1)[k - 1]
            keep &= group_best <= kth + 2 * eps
        chosen = group_ids[keep]
        if len(chosen) == 0:
            return _NO_HITS
        # exact: every row of every chosen group
        rows = np.flatnonzero(np.isin(self.groups, chosen) & valid)
        distances = self.exact_distances(rows, q)
        best: dict[int, float] = {}
        for group, distance in zip(self.groups[rows].tolist(), distances.tolist()):
            if distance < best.get(group, np.inf):
                best[group] = distance
        return _sorted_hits(np.fromiter(best.keys(), dtype=np.int64, count=len(best)),
                            np.fromiter(best.values(), dtype=np.float64, count=len(best)), k, max_distance)


class ExactIndex(VectorIndex):
    """Brute-force exact index over float32 rows with spare capacity.

    Appending writes rows past the current snapshot's end, which no existing
    snapshot can see, so snapshots handed to searching threads stay valid
    without copying. Removals only clear ``alive`` bits; once a quarter of the
    rows are dead the live ones are compacted into new buffers. Compaction and
    growth allocate new buffers.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self._alloc(_MIN_CAPACITY)
        self._n = 0
        self._groups = np.empty(0, dtype=np.int64)
        self._alive: np.ndarray | None = None
        self._snapshot = self._make_snapshot()

    def _alloc(self, capacity: int) -> None:
        self._vectors = np.empty((capacity, self.dim), dtype=np.float32)
        self._ids = np.empty(capacity, dtype=np.int64)
        self._sqnorms = np.empty(capacity, dtype=np.float64)

    def _make_snapshot(self) -> ExactSnapshot:
        n = self._n
        return ExactSnapshot(self.dim, self._ids[:n], self._vectors[:n], self._sqnorms[:n], self._groups,
                             self._alive)

    def snapshot(self) -> ExactSnapshot:
        return self._snapshot

    def _write(self, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        end = start + len(ids)
        self._ids[start:end] = ids
        self._vectors[start:end] = vectors
        for chunk in range(start, end, _NORM_CHUNK):  # float64 norms without a full float64 copy
            block = self._vectors[chunk:min(end, chunk + _NORM_CHUNK)].astype(np.float64)
            self._sqnorms[chunk:chunk + len(block)] = np.einsum("ij,ij->i", block, block)

    def reset(self, ids: ArrayLike, vectors: np.ndarray, groups: ArrayLike) -> None:
        new_ids = np.asarray(ids, dtype=np.int64)
        n = len(new_ids)
        self._alloc(max(_MIN_CAPACITY, n + n // 4))
        self._write(0, new_ids, np.asarray(vectors, dtype=np.float32).reshape(n, self.dim))
        self._n = n
        self._groups = np.asarray(groups, dtype=np.int64).copy()
        self._alive = None
        self._snapshot = self._make_snapshot()

    def add(self, ids: ArrayLike, vectors: np.ndarray, groups: ArrayLike) -> None:
        new_ids = np.asarray(ids, dtype=np.int64)
        k = len(new_ids)
        if k == 0:
            return
        if self._n and int(new_ids[0]) <= int(self._ids[self._n - 1]):
            raise ValueError("ids must be added in ascending order, above every id present")
        n = self._n
        needed = n + k
        if needed > len(self._ids):
            old = (self._vectors[:n], self._ids[:n], self._sqnorms[:n])
            self._alloc(max(needed, 2 * len(self._ids)))
            self._vectors[:n], self._ids[:n], self._sqnorms[:n] = old
        self._write(n, new_ids, np.asarray(vectors, dtype=np.float32).reshape(k, self.dim))
        self._groups = np.concatenate([self._groups, np.asarray(groups, dtype=np.int64)])
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(k, dtype=bool)])
        self._n = needed
        self._snapshot = self._make_snapshot()

    def _drop(self, alive: np.ndarray) -> None:
        """Keep only the rows ``alive`` marks, compacting when enough are dead."""
        n = self._n
        dead = n - int(alive.sum())
        if dead == 0:
            self._alive = None
        elif dead > COMPACT_DEAD_FRACTION * n:
            live = n - dead
            old_vectors, old_ids, old_sqnorms = self._vectors[:n], self._ids[:n], self._sqnorms[:n]
            self._alloc(max(_MIN_CAPACITY, live + live // 4))
            self._vectors[:live] = old_vectors[alive]
            self._ids[:live] = old_ids[alive]
            self._sqnorms[:live] = old_sqnorms[alive]
            self._groups = self._groups[alive]
            self._alive = None
            self._n = live
        else:
            self._alive = alive
        self._snapshot = self._make_snapshot()

    def remove(self, ids: ArrayLike) -> None:
        snapshot = self._snapshot
        alive = snapshot.alive_mask()
        alive[snapshot.positions_if_present(ids)] = False
        self._drop(alive)

    def retain(self, ids: ArrayLike) -> None:
        snapshot = self._snapshot
        self._drop(snapshot.alive_mask() & np.isin(snapshot.ids, np.asarray(ids, dtype=np.int64),
                                                   assume_unique=True))

    def set_groups(self, ids: ArrayLike, groups: ArrayLike) -> None:
        wanted = np.asarray(ids, dtype=np.int64)
        new_groups = np.full(self._n, NO_GROUP, dtype=np.int64)
        if len(wanted):
            new_groups[self._snapshot.positions(wanted)] = np.asarray(groups, dtype=np.int64)
        self._groups = new_groups
        self._snapshot = self._make_snapshot()
