"""The bootstrap helpers the audit protocols use, on data where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from faceaudit.stats import (
    bootstrap_mean,
    bootstrap_mean_replicates,
    bootstrap_proportion_replicates,
    cluster_bootstrap_replicates,
    cluster_rate,
    compare,
    pair_bootstrap_replicates,
    pair_rate,
    pairwise_rate,
    percentile_interval,
    rng_for,
    widened_rate,
    wilson,
)


def wilson_ci(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def all_pairs_bootstrap(distances, threshold, resamples, seed):
    """The image bootstrap of an all-pairs rate written out directly: resample images, take
    the resampled images' distinct pairs (an image drawn twice does not pair with itself)."""
    n = len(distances)
    hits = (distances <= threshold).astype(np.float64)
    rng = np.random.default_rng(seed)
    rates = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(0, n, n)
        valid = chosen[:, None] != chosen[None, :]
        rates[r] = hits[np.ix_(chosen, chosen)][valid].sum() / valid.sum()
    return np.quantile(rates, [0.025, 0.975])


@pytest.mark.parametrize("threshold", [0.4, 1.0, 1.8])
def test_pair_rate_equals_pairwise_rate_on_all_pairs(threshold):
    rng = np.random.default_rng(11)
    points = rng.normal(size=(35, 2))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    i, j = np.triu_indices(len(points), 1)
    expected = pairwise_rate(distances, threshold, resamples=400, seed=5)
    got = pair_rate(i, j, distances[i, j] <= threshold, resamples=400, seed=5)
    assert (got.k, got.n) == (expected.k, expected.n)
    assert got.low == pytest.approx(expected.low, abs=1e-12)
    assert got.high == pytest.approx(expected.high, abs=1e-12)
    # And both are that bootstrap, widened to Wilson's interval.
    low, high = all_pairs_bootstrap(distances, threshold, 400, 5)
    binomial = wilson(got.k, got.n)
    assert got.low == pytest.approx(min(low, binomial.low), abs=1e-12)
    assert got.high == pytest.approx(max(high, binomial.high), abs=1e-12)


def test_pair_rate_with_string_labels_and_columns():
    a = ["img-a", "img-a", "img-b", "img-c"]
    b = ["img-b", "img-c", "img-c", "img-d"]
    hits = np.array([[1, 1], [1, 0], [0, 0], [1, 0]], dtype=bool)
    reps = pair_bootstrap_replicates(a, b, hits, 300, np.random.default_rng(0))
    assert reps.shape == (300, 2)
    finite = reps[~np.isnan(reps[:, 0])]
    assert ((finite >= 0) & (finite <= 1)).all()
    rate = pair_rate(a, b, hits[:, 0], resamples=300)
    assert (rate.k, rate.n) == (3, 4)


def test_shared_images_widen_the_interval():
    # One hub image in 50 matching pairs, plus 50 disjoint non-matching pairs: the 50 hits
    # all hang on one image, so the rate is far less certain than 100 independent trials.
    a = ["hub"] * 50 + [f"x{i}" for i in range(50)]
    b = [f"s{i}" for i in range(50)] + [f"y{i}" for i in range(50)]
    hits = np.array([True] * 50 + [False] * 50)
    rate = pair_rate(a, b, hits, resamples=1000, seed=1)
    low, high = wilson_ci(50, 100)
    assert rate.value == 0.5
    assert rate.low <= low and rate.high >= high
    assert rate.high - rate.low > 2 * (high - low)


def test_widened_rate_contains_wilson_and_falls_back_to_it():
    replicates = np.full(100, 0.2)  # a bootstrap that saw no variation
    rate = widened_rate(2, 10, replicates, "bootstrap")
    low, high = wilson_ci(2, 10)
    assert rate.low == pytest.approx(low) and rate.high == pytest.approx(high)
    assert "widened" in rate.method
    rate = widened_rate(0, 10, np.full(5, np.nan), "bootstrap")
    assert rate.method == "wilson" and rate.low == 0


def test_cluster_rate_counts_and_dependence():
    # Ten identities, five all-miss and five all-hit with 10 items each: clustered outcomes.
    clusters = np.repeat(np.arange(10), 10)
    hits = np.repeat([True] * 5 + [False] * 5, 10)
    rate = cluster_rate(clusters, hits, resamples=1000, seed=2)
    low, high = wilson_ci(50, 100)
    assert (rate.k, rate.n) == (50, 100)
    assert rate.high - rate.low > 2 * (high - low)
    reps = cluster_bootstrap_replicates(clusters, hits, 500, np.random.default_rng(0))
    # Every replicate is a multiple of 1/10: whole identities come and go.
    assert np.allclose(reps * 10, np.round(reps * 10))


def test_compare_interval_contains_the_true_difference_and_ratio():
    k_high, k_low, n = 300, 100, 1000  # 0.30 against 0.10: difference 0.2, ratio 3
    hi = bootstrap_proportion_replicates(k_high, n, 2000, rng_for(0, "hi"))
    lo = bootstrap_proportion_replicates(k_low, n, 2000, rng_for(0, "lo"))
    c = compare(0.3, 0.1, hi, lo)
    assert c.difference == pytest.approx(0.2) and c.ratio == pytest.approx(3.0)
    assert c.difference_low < 0.2 < c.difference_high
    assert c.ratio_low < 3.0 < c.ratio_high
    assert c.difference_excludes_zero
    # Normal approximation of the difference's standard error, as a sanity check on width.
    se = math.sqrt(0.3 * 0.7 / n + 0.1 * 0.9 / n)
    assert (c.difference_high - c.difference_low) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_compare_with_zero_denominator():
    hi = bootstrap_proportion_replicates(5, 40, 2000, rng_for(0, "a"))
    lo = bootstrap_proportion_replicates(0, 40, 2000, rng_for(0, "b"))
    assert (lo == 0).all()
    c = compare(5 / 40, 0.0, hi, lo)
    assert c.ratio is None and c.ratio_low is None and c.ratio_high is None
    assert c.difference == pytest.approx(0.125)
    assert c.difference_low > 0


def test_compare_unbounded_ratio():
    # The low group has 1 event in 40: in about a third of resamples it has none.
    hi = bootstrap_proportion_replicates(10, 40, 2000, rng_for(0, "a"))
    lo = bootstrap_proportion_replicates(1, 40, 2000, rng_for(0, "b"))
    c = compare(10 / 40, 1 / 40, hi, lo)
    assert c.ratio == pytest.approx(10.0)
    assert math.isinf(c.ratio_high) and math.isfinite(c.ratio_low)


def test_compare_same_groups_is_not_a_gap():
    hi = bootstrap_proportion_replicates(10, 50, 2000, rng_for(0, "a"))
    lo = bootstrap_proportion_replicates(10, 50, 2000, rng_for(0, "b"))
    c = compare(0.2, 0.2, hi, lo)
    assert c.difference == 0 and c.difference_low < 0 < c.difference_high
    assert not c.difference_excludes_zero


def test_percentile_interval():
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    low, high = percentile_interval([np.nan, 1.0, 2.0, np.inf, np.inf, np.inf])
    assert low == 1.0 and math.isinf(high)
    assert all(math.isnan(x) for x in percentile_interval([np.nan]))


def test_bootstrap_mean():
    values = np.array([2.0, 4.0] * 50)
    estimate = bootstrap_mean(values, resamples=1000, seed=0)
    assert estimate.value == 3.0 and estimate.n == 100
    assert estimate.low < 3.0 < estimate.high
    constant = bootstrap_mean(np.full(20, 7.0))
    assert (constant.value, constant.low, constant.high) == (7.0, 7.0, 7.0)
    two_columns = bootstrap_mean_replicates(np.c_[values, 2 * values], 50, np.random.default_rng(0))
    assert two_columns.shape == (50, 2)
    assert np.allclose(two_columns[:, 1], 2 * two_columns[:, 0])


def test_proportion_replicates_are_a_bootstrap_of_k_of_n():
    reps = bootstrap_proportion_replicates(30, 100, 20000, np.random.default_rng(0))
    assert reps.mean() == pytest.approx(0.3, abs=0.005)
    assert reps.std() == pytest.approx(math.sqrt(0.3 * 0.7 / 100), rel=0.05)
    assert np.isnan(bootstrap_proportion_replicates(0, 0, 3, np.random.default_rng(0))).all()


def test_rng_for_is_deterministic_and_named():
    a = rng_for(0, "metric", "group=1").integers(0, 1 << 30, 5)
    b = rng_for(0, "metric", "group=1").integers(0, 1 << 30, 5)
    c = rng_for(0, "metric", "group=2").integers(0, 1 << 30, 5)
    d = rng_for(1, "metric", "group=1").integers(0, 1 << 30, 5)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()


def test_existing_wilson_unchanged():
    rate = wilson(9, 200)
    low, high = wilson_ci(9, 200)
    assert (rate.low, rate.high) == (low, high) and rate.method == "wilson"


def test_per_image_weights_give_the_intervals_of_materialized_resamples_within_monte_carlo_error():
    """The audit's pair bootstrap weighs each pair by its images' draw counts instead of building
    each resample's list of pairs; on pairs sharing images (with per-image effects, so pairs are
    dependent) its interval ends agree with the materialized resamples' within Monte Carlo error."""
    rng = np.random.default_rng(3)
    images, pairs, resamples = 60, 400, 2000
    a, b = rng.integers(0, images, pairs), rng.integers(0, images, pairs)
    keep = a != b
    a, b = a[keep], b[keep]
    lean = rng.normal(size=images)  # some images match more often: pairs sharing them are dependent
    hits = rng.random(len(a)) < 1 / (1 + np.exp(2.0 - lean[a] - lean[b]))

    materialized = np.empty(resamples)
    draw = np.random.default_rng(1)
    for r in range(resamples):
        counts = np.bincount(draw.integers(0, images, images), minlength=images)
        resampled = np.repeat(hits, counts[a] * counts[b])  # the resample's pairs, written out
        materialized[r] = resampled.mean() if resampled.size else np.nan
    weighted = pair_bootstrap_replicates(a, b, hits, resamples, np.random.default_rng(2))

    want = np.array(percentile_interval(materialized))
    got = np.array(percentile_interval(weighted))
    # Monte Carlo standard error of each interval end, from resampling the replicates themselves.
    again = np.random.default_rng(4)
    ends = np.array([percentile_interval(again.choice(materialized, resamples)) for _ in range(200)])
    standard_error = ends.std(axis=0)
    assert np.all(np.abs(got - want) < 4 * np.sqrt(2) * standard_error), (got, want, standard_error)
    assert np.nanmean(weighted) == pytest.approx(np.nanmean(materialized), abs=0.01)
