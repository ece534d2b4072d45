"""Rates with their uncertainty: every number faceaudit reports carries n and a 95% interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    """k events out of n, with a 95% confidence interval."""

    k: int
    n: int
    low: float
    high: float
    method: str

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def as_dict(self) -> dict:
        return {"k": self.k, "n": self.n, "rate": self.value, "ci95": [self.low, self.high],
                "ci_method": self.method}

    def __str__(self) -> str:
        return f"{self.value:.2%} [{self.low:.2%}, {self.high:.2%}] ({self.k}/{self.n})"


def wilson(k: int, n: int, confidence: float = 0.95) -> Rate:
    """A proportion with Wilson's score interval (scipy), for independent trials."""
    if n == 0:
        return Rate(0, 0, float("nan"), float("nan"), "wilson")
    interval = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(int(k), int(n), float(interval.low), float(interval.high), "wilson")


def pairwise_rate(distances: np.ndarray, threshold: float, resamples: int = 1000,
                  seed: int = 0, confidence: float = 0.95) -> Rate:
    """The share of distinct pairs (i < j) of a square distance matrix at or below ``threshold``.

    Impostor pairs formed among n images are not independent (each image is in
    n - 1 of them), so a binomial interval would be too narrow. The interval
    here comes from a bootstrap over images: resample images with replacement,
    recompute the rate over the resampled images' distinct pairs (percentile
    interval). A bootstrap cannot see beyond what happened (no match in the
    sample gives [0, 0]), so the interval reported is the wider of it and
    Wilson's interval over all pairs.
    """
    distances = np.asarray(distances)
    a, b = np.triu_indices(len(distances), 1)
    return pair_rate(a, b, distances[a, b] <= threshold, resamples, seed, confidence)


# --- Bootstrap helpers for the audit protocols --------------------------------------------
#
# Each helper that resamples takes a numpy Generator (see ``rng_for``) so that the same
# replicates can give a group's own interval and, paired with another group's replicates,
# the interval of a gap between them. Replicates where nothing survives resampling are NaN
# and are left out of percentile intervals.


@dataclass(frozen=True)
class Estimate:
    """A non-rate statistic (e.g. a mean) over n units, with a 95% interval."""

    value: float
    n: int
    low: float
    high: float
    method: str


@dataclass(frozen=True)
class Comparison:
    """Two groups' values compared: their ratio (high / low) and difference (high - low).

    ``ratio`` is None when the low value is 0 (no finite ratio), and an interval end is
    ``inf`` when the resampled ratio is unbounded (the low group had no events in too
    many resamples). ``difference_excludes_zero`` is the test for claiming a gap.
    """

    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    difference: float
    difference_low: float
    difference_high: float

    @property
    def difference_excludes_zero(self) -> bool:
        return bool(self.difference_low > 0 or self.difference_high < 0)


def rng_for(seed: int, *labels: object) -> np.random.Generator:
    """A generator for one named computation: the same (seed, labels) always gives the same
    stream, whatever else ran before it."""
    import zlib
    key = zlib.crc32("\x1f".join(str(label) for label in labels).encode("utf-8"))
    return np.random.default_rng([int(seed), key])


def percentile_interval(replicates, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates dropped; NaN when none left).

    With infinite replicates (ratios over a zero) the quantiles are taken without
    interpolation, so an end is either a replicate's value or ``inf``."""
    values = np.asarray(replicates, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    method: Literal["inverted_cdf", "linear"] = "inverted_cdf" if np.isinf(values).any() else "linear"
    low, high = np.quantile(values, [alpha, 1.0 - alpha], method=method)
    return float(low), float(high)


def bootstrap_proportion_replicates(k: int, n: int, resamples: int,
                                    rng: np.random.Generator) -> np.ndarray:
    """Replicates of k/n when the n units are resampled with replacement.

    Resampling n independent 0/1 outcomes, of which k are 1, gives a Binomial(n, k/n)
    count: drawn directly, which is the same distribution at a fraction of the cost."""
    if n == 0:
        return np.full(resamples, np.nan)
    return rng.binomial(int(n), k / n, size=resamples) / n


def bootstrap_mean_replicates(values, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of the mean of ``values`` (1-D, or 2-D with one column per statistic)
    when its units (rows) are resampled with replacement. Shape (resamples,) or
    (resamples, columns)."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.ndim == 1
    matrix = values[:, None] if flat else values
    n = len(matrix)
    out = np.full((resamples, matrix.shape[1]), np.nan)
    if n:
        block = max(1, min(resamples, 4_000_000 // n))
        for start in range(0, resamples, block):
            stop = min(resamples, start + block)
            drawn = rng.integers(0, n, (stop - start, n))
            out[start:stop] = matrix[drawn].mean(axis=1)
    return out[:, 0] if flat else out


def bootstrap_mean(values, resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> Estimate:
    """The mean of ``values`` with a percentile bootstrap interval over its units."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Estimate(float("nan"), 0, float("nan"), float("nan"), "bootstrap")
    replicates = bootstrap_mean_replicates(values, resamples, np.random.default_rng(seed))
    low, high = percentile_interval(replicates, confidence)
    return Estimate(float(values.mean()), int(values.size), low, high,
                    f"bootstrap ({resamples} resamples)")


def _weighted_replicates(unit_of_a, unit_of_b, hits: np.ndarray, units: int, resamples: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Rates over weighted items: each resample draws ``units`` units with replacement and
    weighs every item by count[unit_of_a] * count[unit_of_b] (unit_of_b None: count[unit_of_a])."""
    items, columns = hits.shape
    out = np.full((resamples, columns), np.nan)
    if items == 0 or units == 0:
        return out
    block = max(1, min(resamples, 2_000_000 // max(items, units)))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        drawn = rng.integers(0, units, (stop - start, units))
        offsets = (np.arange(stop - start) * units)[:, None]
        counts = np.bincount((drawn + offsets).ravel(), minlength=(stop - start) * units)
        counts = counts.reshape(stop - start, units).astype(np.float64)
        weights = counts[:, unit_of_a]
        if unit_of_b is not None:
            weights = weights * counts[:, unit_of_b]
        total = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = (weights @ hits) / total[:, None]
    return out


def _unit_index(labels: list) -> tuple[np.ndarray, np.ndarray]:
    """Distinct units (sorted: integers numerically, anything else as text) and each label's index."""
    if not labels:
        return np.array([]), np.array([], dtype=np.int64)
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        array = np.asarray([str(label) for label in labels])
    units, index = np.unique(array, return_inverse=True)
    return units, index.ravel()


def _as_columns(hits) -> tuple[np.ndarray, bool]:
    hits = np.asarray(hits, dtype=np.float64)
    if hits.ndim == 1:
        return hits[:, None], True
    return hits, False


def pair_bootstrap_replicates(a, b, hits, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the rate of ``hits`` over an arbitrary list of image pairs.

    ``a`` and ``b`` name each pair's two images (any labels, e.g. paths); ``hits`` is 1-D
    (one outcome per pair) or 2-D (pairs x thresholds). Pairs that share an image are not
    independent, so the images are resampled (with replacement, from the images the pairs
    use) and each pair counts with the product of its two images' multiplicities: a pair
    whose images were not both drawn drops out. On all distinct pairs of n images this is
    exactly ``pairwise_rate``'s bootstrap. Shape (resamples,) or (resamples, thresholds)."""
    matrix, flat = _as_columns(hits)
    images, index = _unit_index(list(a) + list(b))
    pairs = len(matrix)
    out = _weighted_replicates(index[:pairs], index[pairs:], matrix, len(images), resamples, rng)
    return out[:, 0] if flat else out


def cluster_bootstrap_replicates(clusters, hits, resamples: int,
                                 rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the rate of ``hits`` when items come in clusters (e.g. the
    genuine pairs of one identity): clusters are resampled with replacement and each item
    counts with its cluster's multiplicity."""
    matrix, flat = _as_columns(hits)
    names, index = _unit_index(list(clusters))
    out = _weighted_replicates(index, None, matrix, len(names), resamples, rng)
    return out[:, 0] if flat else out


def widened_rate(k: int, n: int, replicates, method: str, confidence: float = 0.95) -> Rate:
    """k of n with the wider of the replicates' percentile interval and Wilson's interval
    (a bootstrap cannot see beyond what happened: no event in the sample gives [0, 0])."""
    binomial = wilson(k, n, confidence)
    if n == 0:
        return binomial
    low, high = percentile_interval(replicates, confidence)
    if np.isnan(low):
        return Rate(int(k), int(n), binomial.low, binomial.high, "wilson")
    return Rate(int(k), int(n), float(min(low, binomial.low)), float(max(high, binomial.high)),
                method + ", widened to Wilson's interval")


def pair_rate(a, b, hits, resamples: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> Rate:
    """The share of pairs that are hits, with pairwise_rate's interval generalised to any
    list of pairs (bootstrap over images, widened to Wilson's interval)."""
    hits = np.asarray(hits, dtype=bool)
    replicates = pair_bootstrap_replicates(a, b, hits, resamples, np.random.default_rng(seed))
    return widened_rate(int(hits.sum()), int(hits.size), replicates,
                        f"bootstrap over images ({resamples} resamples)", confidence)


def cluster_rate(clusters, hits, resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> Rate:
    """The share of items that are hits, with a bootstrap over clusters widened to Wilson."""
    hits = np.asarray(hits, dtype=bool)
    replicates = cluster_bootstrap_replicates(clusters, hits, resamples,
                                              np.random.default_rng(seed))
    return widened_rate(int(hits.sum()), int(hits.size), replicates,
                        f"bootstrap over clusters ({resamples} resamples)", confidence)


def compare(high: float, low: float, high_replicates, low_replicates,
            confidence: float = 0.95) -> Comparison:
    """Ratio and difference of two groups' values, with percentile intervals from their
    (independent) bootstrap replicates, paired resample by resample.

    The ratio is None when ``low`` is 0. A resample whose low value is 0 gives an infinite
    ratio (or an undefined one, dropped, when both are 0), so an interval end may be inf."""
    hi = np.asarray(high_replicates, dtype=np.float64)
    lo = np.asarray(low_replicates, dtype=np.float64)
    difference_low, difference_high = percentile_interval(hi - lo, confidence)
    if low == 0:
        return Comparison(None, None, None, float(high - low), difference_low, difference_high)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(lo == 0, np.where(hi == 0, np.nan, np.inf), hi / np.where(lo == 0, 1, lo))
    ratio_low, ratio_high = percentile_interval(ratios, confidence)
    return Comparison(float(high / low), ratio_low, ratio_high, float(high - low),
                      difference_low, difference_high)
