"""Rates with their uncertainty: every number faceaudit reports carries n and a 95% interval."""

from __future__ import annotations

from dataclasses import dataclass

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
    n = len(distances)
    upper = np.triu_indices(n, 1)
    hits = distances <= threshold
    k, pairs = int(hits[upper].sum()), len(upper[0])
    rng = np.random.default_rng(seed)
    rates = np.empty(resamples)
    hit_counts = hits.astype(np.float64)
    for r in range(resamples):
        chosen = rng.integers(0, n, n)
        sub = hit_counts[np.ix_(chosen, chosen)]
        # Drop self-pairs (the same image drawn twice pairs with itself at distance 0).
        same = chosen[:, None] == chosen[None, :]
        valid = ~same
        rates[r] = sub[valid].sum() / valid.sum()
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(rates, [alpha, 1.0 - alpha])
    binomial = wilson(k, pairs, confidence)
    return Rate(k, pairs, float(min(low, binomial.low)), float(max(high, binomial.high)),
                f"bootstrap over images ({resamples} resamples), widened to Wilson's interval")
