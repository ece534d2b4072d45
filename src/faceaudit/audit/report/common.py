"""What the HTML and Markdown renderers share: words for metrics, number formats, row layout,
the gaps table, the caveats.

Numbers are spelled by faceaudit.audit.words, as in report.json's own sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceaudit.audit import words
from faceaudit.audit.words import gap_is_claimed, pct, significant

from .schema import PROTOCOL_METRICS, group_key, is_rate

PROTOCOL_TITLES = {
    "attributes": "Gender and age estimation: do errors differ between groups?",
    "verification": "Face verification (is it the same person?): do errors differ between groups?",
    "lineup": "Face search in a lineup: do errors differ between groups?",
}
PROTOCOL_UNITS = {"attributes": "faces", "verification": "pairs", "lineup": "searches"}


@dataclass(frozen=True)
class MetricInfo:
    label: str  # short heading
    explain: str  # one plain sentence
    better: str  # "lower" or "higher"
    noun: str  # for sentences: "the false match rate"
    unit: str = ""  # for non-rates: "years", ""


METRICS: dict[str, MetricInfo] = {
    "detection_failure_rate": MetricInfo(
        "Faces missed", "The share of photos in which the system did not find the face at all.", "lower",
        "the share of faces missed"),
    "gender_error_rate": MetricInfo(
        "Gender errors", "The share of faces whose gender the system got wrong; a face the system "
        "did not find counts as an error.", "lower", "the gender error rate"),
    "age_mean_absolute_error": MetricInfo(
        "Age error", "On average, how many years the system's age estimate was off.", "lower",
        "the average age error", "years"),
    "age_range_coverage": MetricInfo(
        "Age range holds the age", "The share of faces whose true age fell within the age range the "
        "system gave (its Low to High). A range meant to hold 90% of ages should do so in every "
        "group; higher is only better at the same width.", "",
        "the share of age ranges holding the true age"),
    "age_range_mean_width": MetricInfo(
        "Age range width", "On average, how many years wide the system's age range was (High minus "
        "Low). A wider range holds more ages but says less.", "",
        "the average age range width", "years"),
    "false_match_rate": MetricInfo(
        "False matches", "The share of pairs of photos of two different people that the system "
        "declared to be the same person.", "lower", "the false match rate"),
    "false_non_match_rate": MetricInfo(
        "Missed matches", "The share of pairs of photos of the same person that the system failed "
        "to match.", "lower", "the missed match rate"),
    "probes_with_false_match_rate": MetricInfo(
        "Innocent people flagged", "The share of searches for people who are not in the gallery that "
        "still matched somebody.", "lower", "the share of innocent people flagged"),
    "mated_probes_with_false_match_rate": MetricInfo(
        "People in the gallery also matched to someone else", "The share of searches for people who "
        "are in the gallery that also matched somebody else.", "lower",
        "the share of searches for people in the gallery that also matched somebody else"),
    "rank1_hit_rate": MetricInfo(
        "Right person first", "The share of searches for people who are in the gallery where the best "
        "match was the right person.", "higher", "the share with the right person first"),
    "mean_false_matches_per_probe": MetricInfo(
        "Wrong matches per search", "On average, how many wrong people each search returned.", "lower",
        "the average number of wrong matches per search"),
}


def metric_info(name: str) -> MetricInfo:
    if name in METRICS:
        return METRICS[name]
    label = name.replace("_", " ")
    return MetricInfo(label.capitalize(), "", "", "the " + label)  # direction unknown: say nothing


def metric_order(report: dict) -> list[str]:
    """Metric names in the protocol's order, then any others in order of appearance."""
    present: list[str] = []
    for row in report["metrics"]:
        if row["metric"] not in present:
            present.append(row["metric"])
    known = [m for m in PROTOCOL_METRICS.get(report["protocol"], ()) if m in present]
    return known + [m for m in present if m not in known]


# ---------------------------------------------------------------- numbers

def _plain_number(name: str, v: float) -> str:
    if metric_info(name).unit == "years":
        return f"{v:.1f}"
    if name == "mean_false_matches_per_probe":
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_value(name: str, v: float, rate: bool) -> str:
    """A metric's value as shown everywhere: '10.5%', '6.8 years', '0.42'."""
    if rate:
        return pct(v)
    unit = metric_info(name).unit
    return _plain_number(name, v) + (f" {unit}" if unit else "")


def fmt_interval(name: str, ci, rate: bool) -> str:
    """A 95% interval: '8.0–13.6%', '5.9–7.4 years'."""
    low, high = float(ci[0]), float(ci[1])
    if rate:
        a, b = pct(low), pct(high)
        if a.endswith("%") and b.endswith("%"):
            a = a[:-1]
        return f"{a}–{b}"
    unit = metric_info(name).unit
    return f"{_plain_number(name, low)}–{_plain_number(name, high)}" + (f" {unit}" if unit else "")


def fmt_kn(row: dict) -> str:
    if row.get("k") is not None:
        return f"{row['k']:,}/{row['n']:,}"
    return f"n = {row['n']:,}"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else words.fmt_ratio(float(r), "×")


def fmt_difference(name: str, d, rate: bool) -> str:
    if d is None:
        return "—"
    d = float(d)
    if rate:
        text = f"{significant(d * 100, 2) if abs(d) < 0.01 else f'{d * 100:.1f}'} points"
    else:
        unit = metric_info(name).unit
        text = _plain_number(name, d) + (f" {unit}" if unit else "")
    return text.replace("-", "−")  # a real minus sign


def fmt_threshold(t, report: dict) -> str:
    """'80', or '97.4 (gives 0.1% false matches overall)' for the target-FMR threshold."""
    if t is None:
        return "—"
    text = words.fmt_threshold(t)
    at = report["parameters"].get("threshold_at_target_fmr")
    target = report["parameters"].get("target_fmr")
    if at is not None and isinstance(at, (int, float)) and abs(float(at) - float(t)) < 1e-9:
        text += f" (gives {pct(target)} false matches overall)" if target is not None else " (target FMR)"
    return text


def fmt_count(x) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


# ---------------------------------------------------------------- groups and layout

def attribute_order(report: dict) -> list[str]:
    order = list(report["parameters"].get("group_by") or [])
    for row in report["metrics"]:
        for k in row["group"]:
            if k not in order:
                order.append(k)
    return order


def group_label(group: dict, order: list[str] | None = None) -> str:
    """'female · Asian'; {} is 'Everyone'. Values are the dataset's own labels."""
    if not group:
        return "Everyone"
    keys = [k for k in (order or []) if k in group] + sorted(k for k in group if k not in (order or []))
    return " · ".join("unlabelled" if group[k] is None else str(group[k]) for k in keys)


def block_title(keys: tuple[str, ...]) -> str:
    return " × ".join(k.replace("_", " ") for k in keys) if keys else "everyone"


@dataclass
class MetricLayout:
    """One metric's rows arranged for a plot and a table."""

    name: str
    rate: bool
    thresholds: list  # sorted; [None] when the metric has no threshold
    overall: dict  # threshold -> row for group {}
    blocks: list  # [(attribute keys, [group dict, ...] sorted by value, high first)]
    cells: dict  # (group_key, threshold) -> row

    @property
    def groups(self) -> list[dict]:
        return [g for _, gs in self.blocks for g in gs]


def layout_metric(report: dict, name: str) -> MetricLayout:
    rows = [r for r in report["metrics"] if r["metric"] == name]
    order = attribute_order(report)
    thresholds = sorted({r["threshold"] for r in rows if r["threshold"] is not None}, key=float)
    if any(r["threshold"] is None for r in rows):
        thresholds = [None] + thresholds
    cells = {(group_key(r["group"]), r["threshold"]): r for r in rows}
    overall = {r["threshold"]: r for r in rows if not r["group"]}
    # Sort groups by their value at the first threshold (the list's own order otherwise).
    first = thresholds[0]
    by_keys: dict[tuple, list[dict]] = {}
    seen: set[tuple] = set()
    for r in rows:
        if not r["group"] or group_key(r["group"]) in seen:
            continue
        seen.add(group_key(r["group"]))
        keys = tuple(sorted(r["group"], key=lambda k: order.index(k) if k in order else len(order)))
        by_keys.setdefault(keys, []).append(r["group"])

    def sort_value(g):
        for t in [first] + thresholds:
            row = cells.get((group_key(g), t))
            if row is not None:
                return -float(row["value"])
        return 0.0

    blocks = [(keys, sorted(gs, key=sort_value))
              for keys, gs in sorted(by_keys.items(), key=lambda kv: (len(kv[0]), kv[0]))]
    return MetricLayout(name, all(is_rate(r) for r in rows), thresholds, overall, blocks, cells)


def gaps_sorted(report: dict) -> list[dict]:
    """Gaps, largest first: clear ones (difference interval excludes 0) before the rest, each
    by ratio, then by difference (unknown ratios last)."""
    def key(g):
        ratio = g.get("ratio")
        return (not gap_is_claimed(g), ratio is None, -(ratio or 0.0), -abs(g.get("difference") or 0.0))
    return sorted(report["gaps"], key=key)


def gap_is_rate(report: dict, gap: dict) -> bool:
    return any(is_rate(r) for r in report["metrics"] if r["metric"] == gap["metric"])


@dataclass(frozen=True)
class GapRow:
    """One row of the gaps table, as text (the HTML and Markdown pages lay it out)."""

    metric: str
    measure: str  # the metric's label
    threshold: str | None  # None when no gap of the report has a threshold
    highest: str  # "group: value"
    lowest: str
    ratio: str  # "10× (4.4× to 30×)"
    difference: str  # "9.5 points (5.2 points to 13.8 points)"
    clear: bool  # the difference's interval excludes 0


def gap_rows(report: dict) -> list[GapRow]:
    """The gaps table of a report, largest gaps first."""
    order = attribute_order(report)
    gaps = gaps_sorted(report)
    with_threshold = any(g["threshold"] is not None for g in gaps)
    rows = []
    for gap in gaps:
        name, rate = gap["metric"], gap_is_rate(report, gap)
        ratio = fmt_ratio(gap.get("ratio"))
        if gap.get("ratio_ci95"):
            ratio += f" ({fmt_ratio(gap['ratio_ci95'][0])} to {fmt_ratio(gap['ratio_ci95'][1])})"
        diff = fmt_difference(name, gap.get("difference"), rate)
        if gap.get("difference_ci95"):
            a, b = gap["difference_ci95"]
            diff += f" ({fmt_difference(name, a, rate)} to {fmt_difference(name, b, rate)})"
        hi, lo = gap["highest"], gap["lowest"]
        rows.append(GapRow(
            metric=name, measure=metric_info(name).label,
            threshold=fmt_threshold(gap["threshold"], report) if with_threshold else None,
            highest=f"{group_label(hi['group'], order)}: {fmt_value(name, hi['value'], rate)}",
            lowest=f"{group_label(lo['group'], order)}: {fmt_value(name, lo['value'], rate)}",
            ratio=ratio, difference=diff, clear=gap_is_claimed(gap)))
    return rows


def gap_sentence(report: dict, gap: dict) -> str:
    """One plain sentence for a gap, e.g. for the top of a metric's section."""
    name = gap["metric"]
    rate = gap_is_rate(report, gap)
    order = attribute_order(report)
    info = metric_info(name)
    hi, lo = gap["highest"], gap["lowest"]
    where = f"At threshold {fmt_threshold(gap['threshold'], report)}, " if gap["threshold"] is not None else ""
    if not where:
        info = MetricInfo(info.label, info.explain, info.better, info.noun[0].upper() + info.noun[1:], info.unit)
    text = (f"{where}{info.noun} was highest for {group_label(hi['group'], order)} "
            f"({fmt_value(name, hi['value'], rate)}) and lowest for {group_label(lo['group'], order)} "
            f"({fmt_value(name, lo['value'], rate)})")
    parts = []
    if gap.get("ratio") is not None:
        s = f"{fmt_ratio(gap['ratio'])} as high"
        if gap.get("ratio_ci95"):
            s += f" (95% interval {fmt_ratio(gap['ratio_ci95'][0])} to {fmt_ratio(gap['ratio_ci95'][1])})"
        parts.append(s)
    if gap.get("difference") is not None:
        s = f"a difference of {fmt_difference(name, gap['difference'], rate)}"
        if gap.get("difference_ci95"):
            a, b = gap["difference_ci95"]
            s += (f" (95% interval {fmt_difference(name, a, rate)} to "
                  f"{fmt_difference(name, b, rate)})")
        parts.append(s)
    if parts:
        text += ": " + ", ".join(parts)
    text += "."
    if not gap_is_claimed(gap):
        text += " The data cannot tell these groups apart: the difference's interval includes 0."
    if gap.get("note"):
        note = str(gap["note"]).strip()
        text += " " + note[0].upper() + note[1:] + ("" if note.endswith(".") else ".")
    return text


def summary_sentences(report: dict) -> list[str]:
    """The report's own summary; if it has none, one sentence per gap, largest first."""
    if report["summary"]:
        return list(report["summary"])
    sentences = [gap_sentence(report, g) for g in gaps_sorted(report)[:3]]
    return sentences or [("This report states no summary and no gaps between groups; the tables below "
                         "give every group's numbers.")]


def min_cell(report: dict):
    return report["parameters"].get("min_cell")


# ---------------------------------------------------------------- the page's frame

def title(report: dict) -> str:
    return PROTOCOL_TITLES.get(report["protocol"], f"{report['protocol'].capitalize()} audit")


def caveats(report: dict) -> list[str]:
    """The 'What this does and does not show' points, as plain sentences (no markup)."""
    ds, target = report["dataset"], report["target"]
    unit = PROTOCOL_UNITS.get(report["protocol"], "cases")
    size = []
    if isinstance(ds.get("images"), int):
        size.append(f"{ds['images']:,} images")
    if isinstance(ds.get("pairs"), int) and ds.get("pairs"):
        size.append(f"{ds['pairs']:,} pairs")
    size_text = f" ({', '.join(size)})" if size else ""
    attributes = ", ".join(a.replace("_", " ") for a in attribute_order(report)) or "none"
    items = [
        (f"Research data, not the real world. These numbers describe how {target['name']} behaved on "
        f"{ds['name']}{size_text}, a research dataset. Cameras, lighting, image quality and the people "
        "photographed differ in real use, so real-world error rates can be higher or lower."),
        (f"Groups as labelled by the dataset. The groups ({attributes}) are the labels the dataset's "
        "creators gave each photo; they can be wrong, and they do not say how people see themselves."),
        ("The 95% interval (the bar around each dot, the range in each table) is the range of values "
        f"these photos are compatible with: fewer {unit} give a wider interval, and two groups whose "
        "intervals overlap may not really differ."),
    ]
    if min_cell(report):
        items.append(f"Groups with fewer than {min_cell(report)} {unit} are drawn hollow and marked "
                     "“small sample”; they are shown, but never named as the highest or lowest group.")
    th = report["parameters"].get("thresholds")
    not_shown = ("It does not show why the differences exist, or whether the system is fit for any "
                 "particular use.")
    if th and report["protocol"] != "attributes":
        not_shown += (" Results hold for the similarity thresholds measured ("
                      + ", ".join(f"{float(t):g}" for t in th) + "); at other settings the numbers change.")
    items.append(not_shown)
    problems = {k: v for k, v in (ds.get("problems") or {}).items() if v}
    if problems:
        items.append("Found while reading the dataset: " + ", ".join(
            f"{fmt_count(v)} {k.replace('_', ' ')}" for k, v in problems.items()) + ".")
    for note in ds.get("notes") or []:
        items.append(f"Dataset note: {note}")
    return items
