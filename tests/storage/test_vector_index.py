"""The in-memory vector index on its own: plain numpy, no SQLite.

Every answer is checked against float64 brute force, including the cases the
float32 shortcut gets wrong on its own (near-ties far from the origin).
"""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InternalServerError
from faceaudit.storage.vector_index import NO_GROUP, ExactIndex, error_bound


def brute(vectors, ids, query, k, max_distance=None, keep=None):
    """(ids, distances) of the k nearest and every row tied with the k-th, exact float64."""
    d = np.sqrt(((vectors.astype(np.float64) - np.asarray(query, np.float64)) ** 2).sum(1))
    rows = [i for i in range(len(ids)) if (keep is None or keep[i]) and (max_distance is None or d[i] <= max_distance)]
    rows.sort(key=lambda i: (d[i], ids[i]))
    if len(rows) > k:
        kth = d[rows[k - 1]]
        rows = [i for i in rows if d[i] <= kth]
    return [int(ids[i]) for i in rows], [float(d[i]) for i in rows]


def brute_groups(vectors, groups, queries, k, max_distance=None, excluded=()):
    q = np.atleast_2d(np.asarray(queries, np.float64))
    d = np.sqrt(((vectors.astype(np.float64)[:, None, :] - q[None]) ** 2).sum(2)).min(1)
    best: dict[int, float] = {}
    for g, distance in zip(groups, d):
        if g != NO_GROUP and g not in excluded:
            best[int(g)] = min(best.get(int(g), np.inf), float(distance))
    ranked = sorted((v, g) for g, v in best.items() if max_distance is None or v <= max_distance)
    if len(ranked) > k:
        ranked = [r for r in ranked if r[0] <= ranked[k - 1][0]]
    return [g for _, g in ranked], [v for v, _ in ranked]


def assert_hits(hits, expected, abs=1e-6):
    ids, distances = expected
    assert hits.ids.tolist() == ids
    assert hits.distances.tolist() == pytest.approx(distances, abs=abs)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    vectors[10] = vectors[11] = vectors[12]  # exact ties
    ids = np.arange(1, 1001, 2, dtype=np.int64)  # ascending, with gaps like rowids after deletions
    groups = np.where(rng.random(500) < 0.6, rng.integers(0, 40, 500), NO_GROUP).astype(np.int64)
    index = ExactIndex(16)
    index.reset(ids, vectors, groups)
    return index, vectors, ids, groups


def test_nearest_is_exact_with_ties_filters_and_radius(data):
    index, vectors, ids, groups = data
    snap = index.snapshot()
    query = vectors[12] + 0.01
    for k, radius in ((1, None), (2, None), (10, None), (50, 3.0), (500, 4.0), (7, 0.0001)):
        hits = snap.nearest(query, k, radius)
        assert_hits(hits, brute(vectors, ids, query, k, radius))
    # the three identical rows are all returned even when k cuts through them
    assert snap.nearest(vectors[12], 2).ids.tolist() == [ids[10], ids[11], ids[12]]
    keep = ~np.isin(ids, ids[[10, 3]]) & np.isin(groups, [1, 2, 3])
    hits = snap.nearest(query, 20, exclude_ids=ids[[10, 3]].tolist(), groups=[1, 2, 3])
    assert_hits(hits, brute(vectors, ids, query, 20, keep=keep))
    assert snap.nearest(query, 5, groups=[]).ids.tolist() == []
    with pytest.raises(InternalServerError):  # excluding a row the index never had: out of step
        snap.nearest(query, 5, exclude_ids=[2])


def test_nearest_groups_is_exact(data):
    index, vectors, _, groups = data
    snap = index.snapshot()
    for queries in (vectors[5] + 0.02, vectors[[5, 200, 300]]):
        for k, radius, excluded in ((1, None, ()), (5, None, (int(groups[groups >= 0][0]),)), (40, 4.5, ())):
            hits = snap.nearest_groups(queries, k, radius, exclude_groups=excluded)
            assert_hits(hits, brute_groups(vectors, groups, queries, k, radius, excluded))


def test_float32_near_ties_far_from_the_origin_are_still_ranked_exactly():
    """Far from the origin the float32 expansion |x|^2 + |q|^2 - 2x.q loses the differences
    between close rows entirely; the error bound keeps them all as candidates."""
    rng = np.random.default_rng(5)
    offset = np.full(128, 300.0)
    vectors = (offset + rng.normal(0, 1e-3, (300, 128))).astype(np.float32)
    ids = np.arange(1, 301, dtype=np.int64)
    index = ExactIndex(128)
    index.reset(ids, vectors, np.full(300, NO_GROUP))
    snap = index.snapshot()
    query = (offset + rng.normal(0, 1e-3, 128)).astype(np.float32)
    approx = (snap.sqnorms + float(query.astype(np.float64) @ query) - 2.0 * (vectors @ query).astype(np.float64))
    exact_sq = ((vectors.astype(np.float64) - query.astype(np.float64)) ** 2).sum(1)
    # the shortcut alone would rank wrongly here...
    assert np.argsort(approx, kind="stable")[:5].tolist() != np.argsort(exact_sq, kind="stable")[:5].tolist()
    # ...but its error stays within the bound, so the answer is exact
    bound = error_bound(128, snap.max_sqnorm, float(query.astype(np.float64) @ query))
    assert np.abs(approx - exact_sq).max() <= bound
    for k in (1, 5, 20):
        hits = snap.nearest(query, k)
        assert_hits(hits, brute(vectors, ids, query, k), abs=1e-9)


def test_snapshots_never_change_and_removal_compacts(data):
    index, vectors, ids, _ = data
    before = index.snapshot()
    query = vectors[0]
    answer = before.nearest(query, 30)
    index.add(np.array([2001, 2003]), vectors[:2] * 0.5, [NO_GROUP, 7])
    index.remove(ids[:10].tolist() + [999_999])  # unknown ids are ignored
    assert before.nearest(query, 30).ids.tolist() == answer.ids.tolist()
    after = index.snapshot()
    assert after.live == 500 + 2 - 10 and after.n == 502 and after.alive is not None  # marked, not compacted
    keep = np.ones(500, bool)
    keep[:10] = False
    all_vectors = np.vstack([vectors, vectors[:2] * 0.5])
    all_ids = np.concatenate([ids, [2001, 2003]])
    hits = after.nearest(query, 30)
    assert hits.ids.tolist() == brute(all_vectors, all_ids, query, 30, keep=np.concatenate([keep, [True, True]]))[0]
    index.retain(all_ids[200:])  # past a quarter dead: compacted
    compact = index.snapshot()
    assert compact.alive is None and compact.n == compact.live == 302
    assert compact.nearest(query, 10).ids.tolist() == brute(all_vectors[200:], all_ids[200:], query, 10)[0]
    with pytest.raises(ValueError):
        index.add(np.array([5]), vectors[:1], [NO_GROUP])  # ids only grow


def test_set_groups_replaces_every_membership(data):
    index, vectors, ids, _ = data
    index.set_groups(ids[[4, 9]], [100, 100])
    snap = index.snapshot()
    hits = snap.nearest_groups(vectors[4], 10)
    assert hits.ids.tolist() == [100] and hits.distances.tolist() == [0.0]
    assert snap.nearest(vectors[9], 10, groups=[100]).ids.tolist() == [ids[9], ids[4]]
    assert snap.nearest(vectors[9], 10, groups=[5]).ids.tolist() == []  # the old memberships are gone


def test_an_empty_index_answers_nothing():
    index = ExactIndex(8)
    snap = index.snapshot()
    assert snap.live == 0
    assert snap.nearest(np.zeros(8), 3).ids.tolist() == []
    assert snap.nearest_groups(np.zeros((2, 8)), 3).ids.tolist() == []
