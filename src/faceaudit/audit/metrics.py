"""Report rows from measured numbers: metric rows, gap rows, DET points, thresholds, sentences.

Numbers and groups are worded by audit/words.py, here and in the rendered reports.

Everything here works on plain numbers and arrays; the protocols (audit/protocols/)
decide what is measured over which images, pairs or probes. Rows follow
docs/audit-report-schema.md: rates carry k, n, a 95% interval and its method;
other statistics carry n and a bootstrap interval; every row says whether its
cell is small (n < min_cell). Nothing written here is NaN or infinite: a number
that does not exist is null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.audit.words import (
    describe_group,
    fmt_interval,
    fmt_rate,
    fmt_ratio,
    fmt_threshold,
    gap_is_claimed,
    threshold_value,
)
from faceaudit.stats import Estimate, Rate, compare

#: Bootstrap resamples for every interval the protocols compute themselves.
RESAMPLES = 2000

#: The similarity grid of DET curves.
DET_GRID = tuple(float(t) for t in np.arange(0.0, 100.0 + 0.25, 0.5))


def number(x: float | None) -> float | None:
    """A JSON-safe float: None for None, NaN or infinity."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class Measured:
    """One metric row plus the bootstrap replicates of its value (for gaps), if any."""

    row: dict
    replicates: np.ndarray | None = None

    @property
    def value(self) -> float | None:
        return self.row["value"]


def rate_row(metric: str, group: dict, threshold: float | None, rate: Rate, min_cell: int) -> dict:
    return {"metric": metric, "group": dict(group), "threshold": threshold_value(threshold),
            "value": number(rate.value), "k": int(rate.k), "n": int(rate.n),
            "ci95": [number(rate.low), number(rate.high)], "ci_method": rate.method,
            "small_cell": bool(rate.n < min_cell)}


def estimate_row(metric: str, group: dict, threshold: float | None, estimate: Estimate,
                 min_cell: int) -> dict:
    return {"metric": metric, "group": dict(group), "threshold": threshold_value(threshold),
            "value": number(estimate.value), "n": int(estimate.n),
            "ci95": [number(estimate.low), number(estimate.high)], "ci_method": estimate.method,
            "small_cell": bool(estimate.n < min_cell)}


# --- gaps --------------------------------------------------------------------------------


def _known(m: Measured) -> float:
    """The value of a cell that find_gap kept (only cells with a value are)."""
    if m.value is None:
        raise ValueError(f"no value: {m.row}")
    return m.value


def find_gap(candidates: Sequence[Measured], *, metric: str, threshold: float | None,
             group_by: Sequence[str], resamples: int = RESAMPLES,
             describe_value: Callable[[float], str] | None = None) -> dict | None:
    """The gap between the highest and lowest non-small cells among ``candidates`` (the
    intersectional cells of one metric at one threshold), or None with fewer than two.

    Intervals pair the two cells' own bootstrap replicates (each resampled within its
    group, independently). The ratio is null when the lowest value is 0, and its interval
    null when its upper end is unbounded; ``note`` then says why."""
    eligible = [m for m in candidates
                if not m.row["small_cell"] and m.row["n"] > 0 and m.value is not None
                and m.replicates is not None]
    if len(eligible) < 2:
        return None
    highest = max(eligible, key=_known)
    lowest = min((m for m in eligible if m is not highest), key=_known)
    comparison = compare(_known(highest), _known(lowest), highest.replicates, lowest.replicates)
    notes = []
    fmt = describe_value or (lambda v: f"{v:g}")
    if comparison.ratio is None:
        if "k" in lowest.row:
            notes.append(f"no ratio: the lowest group had no events (0 of {lowest.row['n']}), "
                         "so the ratio is undefined; compare the difference instead")
        else:
            notes.append(f"no ratio: the lowest group's value is {fmt(0.0)}, so the ratio is "
                         "undefined; compare the difference instead")
    unbounded = comparison.ratio is not None and not (
        comparison.ratio_low is not None and comparison.ratio_high is not None
        and math.isfinite(comparison.ratio_low) and math.isfinite(comparison.ratio_high))
    if unbounded:
        notes.append(f"no ratio interval: the ratio's upper bound is unbounded (in more than 2.5% "
                     f"of resamples the lowest group had no events); its lower bound is "
                     f"{comparison.ratio_low:.3g}")
    row = {"metric": metric, "threshold": threshold_value(threshold), "group_by": list(group_by),
           "highest": {"group": dict(highest.row["group"]), "value": highest.value},
           "lowest": {"group": dict(lowest.row["group"]), "value": lowest.value},
           "ratio": number(comparison.ratio),
           "ratio_ci95": (None if comparison.ratio is None or unbounded
                          else [number(comparison.ratio_low), number(comparison.ratio_high)]),
           "difference": number(comparison.difference),
           "difference_ci95": [number(comparison.difference_low),
                               number(comparison.difference_high)],
           "ci_method": f"bootstrap ({resamples} resamples)"}
    if notes:
        row["note"] = "; ".join(notes)
    return row


# --- verification helpers ----------------------------------------------------------------


def matched(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """pairs x thresholds: similarity >= threshold (NaN, i.e. no face, never matches)."""
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(scores, nan=-np.inf)[:, None] >= np.asarray(thresholds)[None, :]


def det_points(genuine: np.ndarray, impostor: np.ndarray,
               grid: Sequence[float] = DET_GRID) -> list[dict]:
    """FMR and FNMR at each grid threshold (both kinds of pairs needed)."""
    if not len(genuine) or not len(impostor):
        raise ValueError("a DET curve needs both genuine and impostor pairs")
    genuine = np.nan_to_num(np.asarray(genuine, dtype=np.float64), nan=-np.inf)
    impostor = np.nan_to_num(np.asarray(impostor, dtype=np.float64), nan=-np.inf)
    grid_array = np.asarray(grid, dtype=np.float64)
    g_sorted, i_sorted = np.sort(genuine), np.sort(impostor)
    # Count of scores >= t: n - (number of scores < t).
    g_match = len(g_sorted) - np.searchsorted(g_sorted, grid_array, side="left")
    i_match = len(i_sorted) - np.searchsorted(i_sorted, grid_array, side="left")
    points = []
    for index, t in enumerate(grid_array):
        points.append({"threshold": float(t), "fmr": float(i_match[index] / len(i_sorted)),
                       "fnmr": float(1.0 - g_match[index] / len(g_sorted))})
    return points


def threshold_at_fmr(impostor: np.ndarray, target_fmr: float,
                     all_scores: np.ndarray | None = None) -> tuple[float | None, str | None]:
    """The lowest threshold at which the false match rate over ``impostor`` (NaN = no
    match) is at most ``target_fmr``, and a note when the answer needs a caveat.

    The threshold is a short decimal just above the (k+1)-th highest impostor score
    (k = floor(target_fmr x pairs)) chosen so that no score at all (``all_scores``,
    genuine included) lies between the two: it is as good as the exact boundary for both
    error rates, and readable."""
    impostor = np.asarray(impostor, dtype=np.float64)
    pairs = len(impostor)
    if pairs == 0:
        return None, "no impostor pairs: no threshold at the target false match rate"
    valid = np.sort(impostor[~np.isnan(impostor)])[::-1]
    allowed = math.floor(target_fmr * pairs + 1e-9)
    if allowed >= len(valid):
        return 0.0, None
    boundary = float(valid[allowed])
    scores = valid if all_scores is None else np.asarray(all_scores, dtype=np.float64)
    scores = scores[~np.isnan(scores)]
    threshold = _just_above(boundary, scores)
    notes = []
    if allowed == 0:
        notes.append(f"with {pairs} impostor pairs, a false match rate of {target_fmr:g} allows "
                     "no false match at all: the threshold is just above the highest impostor "
                     f"similarity, and at least {math.ceil(3 / target_fmr)} impostor pairs "
                     "would be needed to measure that rate (rule of three)")
    if threshold > 100:
        return None, ("impostor similarities reach 100: no threshold on the 0-100 scale "
                      "achieves the target false match rate")
    return threshold, "; ".join(notes) or None


def _just_above(x: float, scores: np.ndarray) -> float:
    """The shortest decimal t > x with no score in (x, t)."""
    above = int((scores > x).sum())
    for digits in range(9):
        step = 10.0 ** -digits
        t = round((math.floor(x / step) + 1) * step, digits)
        if t > x and int((scores >= t).sum()) == above:
            return float(t)
    return float(np.nextafter(x, np.inf))


# --- sentences ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Phrase:
    """How a metric reads in a sentence.

    ``lead`` comes before the numbers, ``unit(group)`` names what each number is of
    (e.g. "images of Black women"), ``fmt`` prints a value, ``more`` completes
    "10x ..." ("as often", "as much")."""

    lead: str
    unit: Callable[[dict], str]
    fmt: Callable[[float | None], str] = fmt_rate
    more: str = "as often"
    per: str = "of"  # "of" for rates ("10% of images of ..."), "for" for means


def gap_sentence(gap: dict, phrase: Phrase, rows_by_group: dict) -> str:
    """One plain-language sentence on a gap row, claiming it only when the difference's
    interval excludes 0."""
    hi_group, lo_group = gap["highest"]["group"], gap["lowest"]["group"]
    hi_row = rows_by_group[_key(hi_group)]
    lo_row = rows_by_group[_key(lo_group)]
    prefix = "" if gap["threshold"] is None else f"At {fmt_threshold(gap['threshold'])}, "
    lead = phrase.lead if prefix else phrase.lead[:1].upper() + phrase.lead[1:]
    hi = f"{phrase.fmt(hi_row['value'])} {fmt_interval(hi_row['ci95'], phrase.fmt)}"
    lo = f"{phrase.fmt(lo_row['value'])} {fmt_interval(lo_row['ci95'], phrase.fmt)}"
    difference = (f"difference {phrase.fmt(gap['difference'])}, 95% CI "
                  f"{fmt_interval(gap['difference_ci95'], phrase.fmt)}")
    body = (f"{prefix}{lead} {hi} {phrase.per} {phrase.unit(hi_group)} against {lo} "
            f"{phrase.per} {phrase.unit(lo_group)}")
    if gap["highest"]["value"] == gap["lowest"]["value"]:
        return (f"{prefix}{lead} {phrase.fmt(hi_row['value'])} in every group compared "
                f"(from {describe_group(hi_group)} to {describe_group(lo_group)}): no gap.")
    if not gap_is_claimed(gap):
        return (f"{body}: the data cannot tell these groups apart ({difference}, "
                "includes 0).")
    if gap["ratio"] is None:
        return (f"{body}: {describe_group(lo_group)} had none, so no ratio is given "
                f"({difference}).")
    ratio_ci = gap["ratio_ci95"]
    if ratio_ci is None:
        return (f"{body}: {fmt_ratio(gap['ratio'])} {phrase.more} (the ratio's upper bound "
                f"is unbounded; {difference}).")
    return (f"{body}: {fmt_ratio(gap['ratio'])} {phrase.more} "
            f"(ratio 95% CI [{fmt_ratio(ratio_ci[0])}, {fmt_ratio(ratio_ci[1])}]).")


def _key(group: dict) -> tuple:
    return tuple(sorted(group.items()))


def rows_index(rows: Sequence[dict], metric: str, threshold: float | None) -> dict:
    """rows of one metric at one threshold, by group."""
    t = threshold_value(threshold)
    return {_key(r["group"]): r for r in rows if r["metric"] == metric and r["threshold"] == t}


def small_cells_sentence(rows: Sequence[dict], min_cell: int, what: str) -> str | None:
    small = sorted({_key(r["group"]) for r in rows if r["small_cell"]})
    if not small:
        return None
    names = ", ".join(describe_group(dict(k)) for k in small[:6])
    more = f" and {len(small) - 6} more" if len(small) > 6 else ""
    return (f"{len(small)} group(s) had fewer than {min_cell} {what} for at least one metric "
            f"({names}{more}): their numbers are shown but flagged as small, and they are "
            "never chosen for a gap.")


# --- what the protocols share -------------------------------------------------------------


def add_rows_and_gaps(report: dict, measured: Mapping[tuple[str, float | None], Sequence[Measured]],
                      metrics: Sequence[str], levels: Sequence[float | None], *, group_by: Sequence[str],
                      resamples: int, phrases: Mapping[str, Phrase]) -> None:
    """Append each metric's rows and its gap (if any) at each threshold to ``report``, metric by
    metric; only cells with replicates (the intersectional ones) compete for the gap."""
    for metric in metrics:
        for t in levels:
            found = measured.get((metric, t), [])
            report["metrics"].extend(m.row for m in found)
            gap = find_gap([m for m in found if m.replicates is not None], metric=metric,
                           threshold=t, group_by=group_by, resamples=resamples,
                           describe_value=phrases[metric].fmt)
            if gap is not None:
                report["gaps"].append(gap)


def headline_gap_sentences(report: dict, phrases: Mapping[str, Phrase], headline: str) -> list[str]:
    """A sentence for every gap of the ``headline`` metric (at every threshold) and for every
    other gap the data show (gap_is_claimed), in the report's order."""
    rows = report["metrics"]
    return [gap_sentence(gap, phrases[gap["metric"]], rows_index(rows, gap["metric"], gap["threshold"]))
            for gap in report["gaps"] if gap["metric"] == headline or gap_is_claimed(gap)]
