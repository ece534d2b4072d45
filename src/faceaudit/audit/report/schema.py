"""report.json, schema version 1: validation and loading (docs/audit-report-schema.md).

A report is checked before anything is written, so that a protocol that forgets a
field, writes a rate that is not k / n or an interval that does not hold its value
fails loudly with every problem listed, instead of producing a page that reads
well and is wrong.
"""

from __future__ import annotations

import json
import math
from numbers import Integral, Real
from pathlib import Path
from typing import TypeGuard

SCHEMA_VERSION = 1

PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "attributes": ("detection_failure_rate", "gender_error_rate", "age_mean_absolute_error",
                   "age_range_coverage", "age_range_mean_width"),
    "verification": ("false_match_rate", "false_non_match_rate"),
    "lineup": ("probes_with_false_match_rate", "mated_probes_with_false_match_rate", "rank1_hit_rate",
               "mean_false_matches_per_probe"),
}
NON_RATE_METRICS = frozenset({"age_mean_absolute_error", "age_range_mean_width", "mean_false_matches_per_probe"})

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "faceaudit_version": str,
    "protocol": str,
    "created": str,
    "command": list,
    "dataset": dict,
    "target": dict,
    "parameters": dict,
    "software": dict,
    "metrics": list,
    "gaps": list,
    "summary": list,
}
# `curves` is optional (an attributes report has none); when present it must be a list.

_MAX_LISTED = 25
_TOLERANCE = 1e-6


class ReportError(ValueError):
    """A report that does not follow schema version 1; the message lists every problem."""

    def __init__(self, problems: list[str], what: str = "report"):
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED]
        more = len(self.problems) - len(shown)
        lines = [(f"{what} does not follow report.json schema version {SCHEMA_VERSION} "
                 f"(docs/audit-report-schema.md); {len(self.problems)} problem(s):")]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


def is_rate(row: dict) -> bool:
    """A row is a rate (value = k / n, in [0, 1]) when it carries k."""
    return row.get("k") is not None


def _number(x: object) -> TypeGuard[Real]:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _integer(x: object) -> TypeGuard[int]:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _interval(x) -> bool:
    return (isinstance(x, (list, tuple)) and len(x) == 2 and all(_number(v) for v in x)
            and float(x[0]) <= float(x[1]) + _TOLERANCE)


def _group(x) -> bool:
    return isinstance(x, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (str, Real))) for k, v in x.items())


def group_key(group: dict) -> tuple:
    """A hashable, order-free key for a group object."""
    return tuple(sorted((k, str(v)) for k, v in group.items()))


def _check_metric(i: int, row, known: set[str], problems: list[str]) -> None:
    where = f"metrics[{i}]"
    if not isinstance(row, dict):
        problems.append(f"{where}: expected an object, got {type(row).__name__}")
        return
    name = row.get("metric")
    if isinstance(name, str):
        where = f"metrics[{i}] ({name})"
    for field in ("metric", "group", "threshold", "value", "n", "ci95", "small_cell"):
        if field not in row:
            problems.append(f"{where}: missing required field '{field}'")
    if "metric" in row and not (isinstance(name, str) and name):
        problems.append(f"{where}: 'metric' must be a non-empty string")
    if "group" in row and not _group(row["group"]):
        problems.append(f"{where}: 'group' must be an object of attribute -> value ({{}} for everyone)")
    t = row.get("threshold")
    if t is not None and not (_number(t) and 0 <= float(t) <= 100):
        problems.append(f"{where}: 'threshold' must be null or a number from 0 to 100, got {t!r}")
    value, n, k = row.get("value"), row.get("n"), row.get("k")
    if "value" in row and not _number(value):
        problems.append(f"{where}: 'value' must be a finite number, got {value!r}")
    if "n" in row and not (_integer(n) and n >= 0):
        problems.append(f"{where}: 'n' must be a non-negative integer, got {n!r}")
    if "small_cell" in row and not isinstance(row["small_cell"], bool):
        problems.append(f"{where}: 'small_cell' must be true or false")
    ci = row.get("ci95")
    if "ci95" in row and not _interval(ci):
        problems.append(f"{where}: 'ci95' must be [low, high] with low <= high, got {ci!r}")
        ci = None
    if isinstance(name, str) and name in known and name not in NON_RATE_METRICS and k is None:
        problems.append(f"{where}: a rate must carry 'k' (events) with 'n' (trials)")
    if k is not None:
        if not (_integer(k) and _integer(n) and 0 <= k <= n and n > 0):
            problems.append(f"{where}: 'k' must be an integer from 0 to n (n > 0), got k={k!r}, n={n!r}")
        elif _number(value) and abs(float(value) - k / n) > _TOLERANCE:
            problems.append(f"{where}: a rate's value must equal k / n = {k}/{n} = {k / n:.6g}, "
                            f"got {value!r}")
        if ci is not None and _number(value):
            low, high = float(ci[0]), float(ci[1])
            if low < -_TOLERANCE or high > 1 + _TOLERANCE:
                problems.append(f"{where}: a rate's ci95 must lie within [0, 1], got {list(ci)}")
            elif not low - _TOLERANCE <= float(value) <= high + _TOLERANCE:
                problems.append(f"{where}: ci95 {list(ci)} does not contain the value {value}")


def _check_gap(i: int, gap, metric_names: set[str], problems: list[str]) -> None:
    where = f"gaps[{i}]"
    if not isinstance(gap, dict):
        problems.append(f"{where}: expected an object, got {type(gap).__name__}")
        return
    for field in ("metric", "threshold", "highest", "lowest", "ratio", "difference"):
        if field not in gap:
            problems.append(f"{where}: missing required field '{field}'")
    name = gap.get("metric")
    if "metric" in gap and name not in metric_names:
        problems.append(f"{where}: metric {name!r} has no rows in 'metrics'")
    t = gap.get("threshold")
    if t is not None and not (_number(t) and 0 <= float(t) <= 100):
        problems.append(f"{where}: 'threshold' must be null or a number from 0 to 100, got {t!r}")
    for end in ("highest", "lowest"):
        if end not in gap:
            continue
        e = gap[end]
        if not (isinstance(e, dict) and _group(e.get("group")) and _number(e.get("value"))):
            problems.append(f"{where}: '{end}' must be {{\"group\": {{...}}, \"value\": number}}")
    for field in ("ratio", "difference"):
        if gap.get(field) is not None and not _number(gap[field]):
            problems.append(f"{where}: '{field}' must be a number or null, got {gap[field]!r}")
        ci = gap.get(field + "_ci95")
        if ci is not None and not _interval(ci):
            problems.append(f"{where}: '{field}_ci95' must be [low, high] or null, got {ci!r}")


def _check_curve(i: int, curve, problems: list[str]) -> None:
    where = f"curves[{i}]"
    if not isinstance(curve, dict):
        problems.append(f"{where}: expected an object, got {type(curve).__name__}")
        return
    if not isinstance(curve.get("kind"), str):
        problems.append(f"{where}: 'kind' must be a string such as \"det\"")
    if not _group(curve.get("group")):
        problems.append(f"{where}: 'group' must be an object of attribute -> value")
    points = curve.get("points")
    if not isinstance(points, list):
        problems.append(f"{where}: 'points' must be a list")
        return
    for j, p in enumerate(points):
        if not (isinstance(p, dict) and all(_number(p.get(f)) for f in ("threshold", "fmr", "fnmr"))):
            problems.append(f"{where}.points[{j}]: expected numbers 'threshold', 'fmr', 'fnmr', got {p!r}")
            break


def validate_report(report, what: str = "report") -> None:
    """Raise ReportError listing every way ``report`` departs from schema version 1."""
    if not isinstance(report, dict):
        raise ReportError([f"expected a JSON object (dict), got {type(report).__name__}"], what)
    problems: list[str] = []
    version = report.get("schema_version")
    if "schema_version" in report and version != SCHEMA_VERSION:
        raise ReportError([(f"schema_version is {version!r}; this faceaudit reads version "
                           f"{SCHEMA_VERSION} only")], what)
    for field, kind in REQUIRED_FIELDS.items():
        if field not in report:
            problems.append(f"missing required field '{field}'")
        elif not isinstance(report[field], kind) or isinstance(report[field], bool):
            problems.append(f"'{field}' must be {getattr(kind, '__name__', kind)}, "
                            f"got {type(report[field]).__name__}")
    protocol = report.get("protocol")
    if isinstance(protocol, str) and protocol not in PROTOCOL_METRICS:
        problems.append(f"'protocol' must be one of {', '.join(PROTOCOL_METRICS)}; got {protocol!r}")
    known = set(PROTOCOL_METRICS.get(protocol, ())) if isinstance(protocol, str) else set()
    if isinstance(report.get("command"), list) and not all(isinstance(a, str) for a in report["command"]):
        problems.append("'command' must be a list of strings (the argv that produced the report)")
    for field in ("dataset", "target"):
        if isinstance(report.get(field), dict) and not isinstance(report[field].get("name"), str):
            problems.append(f"'{field}.name' must be a string")
    params = report.get("parameters")
    if isinstance(params, dict):
        th = params.get("thresholds")
        if th is not None and not (isinstance(th, list) and all(_number(t) for t in th)):
            problems.append("'parameters.thresholds' must be a list of numbers")
    if isinstance(report.get("summary"), list) and not all(isinstance(s, str) for s in report["summary"]):
        problems.append("'summary' must be a list of sentences (strings)")

    metric_names: set[str] = set()
    if isinstance(report.get("metrics"), list):
        if not report["metrics"]:
            problems.append("'metrics' is empty: a report needs at least one row")
        seen: set[tuple] = set()
        for i, row in enumerate(report["metrics"]):
            _check_metric(i, row, known, problems)
            if isinstance(row, dict) and isinstance(row.get("metric"), str) and _group(row.get("group")):
                metric_names.add(row["metric"])
                key = (row["metric"], group_key(row["group"]), row.get("threshold"))
                if key in seen:
                    problems.append(f"metrics[{i}] ({row['metric']}): duplicate row for group "
                                    f"{row['group']} at threshold {row.get('threshold')}")
                seen.add(key)
    if isinstance(report.get("gaps"), list):
        for i, gap in enumerate(report["gaps"]):
            _check_gap(i, gap, metric_names, problems)
    curves = report.get("curves", [])
    if not isinstance(curves, list):
        problems.append(f"'curves' must be a list, got {type(curves).__name__}")
    else:
        for i, curve in enumerate(curves):
            _check_curve(i, curve, problems)
    if problems:
        raise ReportError(problems, what)


def _plain(o):
    """json.dumps fallback: numpy scalars and arrays become Python numbers and lists."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def dumps(report: dict) -> str:
    """Strict JSON (no NaN or Infinity), indented, UTF-8 text."""
    try:
        return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False, default=_plain) + "\n"
    except (TypeError, ValueError) as exc:
        raise ReportError([f"cannot be written as strict JSON: {exc}"]) from exc


def load_report(path) -> dict:
    """Read and validate a report.json (a directory means its report.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError([f"no such file: {path}"], str(path)) from None
    except json.JSONDecodeError as exc:
        raise ReportError([f"not valid JSON: {exc}"], str(path)) from None
    validate_report(report, what=str(path))
    return report
