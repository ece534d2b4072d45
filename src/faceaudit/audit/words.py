"""How numbers, groups and gaps read: the one vocabulary of report.json's sentences and the pages.

The protocols write report.json's summary sentences with these; report/common.py
builds the HTML and Markdown wording on them, so that a rate, a ratio or a
threshold is spelled the same way wherever it appears. (Pages write "×" where
report.json, plain text, writes "x".)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def threshold_value(t: float | None) -> float | int | None:
    """Thresholds as the caller wrote them: 80 stays 80, 87.35 stays 87.35."""
    if t is None:
        return None
    t = float(t)
    return int(t) if t.is_integer() else t


def fmt_rate(x: float | None) -> str:
    """10.5%, 1.0%, 0.062%, 0%: one decimal from 1%, two significant digits below."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0%"
    percent = 100.0 * x
    if abs(percent) >= 1:
        return f"{percent:.1f}%"
    return f"{percent:.2g}%"


def significant(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant digits, trailing zeros kept: 0.0504 -> '0.050'."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def pct(v: float) -> str:
    """A rate in a table: 10.5%, 1.0%, 0.60%, 0.012% -- like fmt_rate, but two significant digits
    are always shown below 1% (0.60%, not 0.6%), so that a column reads alike. (report.json's
    sentences keep fmt_rate's spelling.)"""
    a = float(v) * 100
    if a == 0:
        return "0%"
    if abs(a) >= 1:
        return f"{a:.1f}%"
    if abs(a) >= 0.1:
        return f"{a:.2f}%"
    return significant(a) + "%"


def fmt_number(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f}{unit}" if abs(x) >= 1 or x == 0 else f"{x:.2g}{unit}"


def fmt_interval(ci: Sequence[float | None], fmt: Callable[[float | None], str] = fmt_rate) -> str:
    low, high = ci
    return f"[{fmt(low)}, {fmt(high) if high is not None else 'unbounded'}]"


#: Ratios from here up are whole numbers. Two significant digits throughout (1.2x, 9.8x, 12x,
#: 150x), the precision rates get below 1%; the intervals of large ratios are wide anyway.
RATIO_WHOLE_FROM = 10


def fmt_ratio(ratio: float, sign: str = "x") -> str:
    if ratio >= RATIO_WHOLE_FROM:
        return f"{ratio:.0f}{sign}"
    return f"{ratio:.1f}{sign}"


def fmt_threshold(t: float | None) -> str:
    t = threshold_value(t)
    if t is None:
        return "n/a"
    return str(t) if isinstance(t, int) else f"{t:g}"


def gap_is_claimed(gap: dict[str, Any]) -> bool:
    """A gap is claimed only when its difference's interval excludes 0 (a gap without an
    interval is taken as it stands)."""
    ci = gap.get("difference_ci95")
    if not ci:
        return True
    low, high = ci
    return (low is not None and low > 0) or (high is not None and high < 0)


def describe_group(group: dict[str, Any]) -> str:
    """{"gender": "female", "race": "Black"} -> "Black women"; {} -> "everyone"."""
    if not group:
        return "everyone"
    gender, race = group.get("gender"), group.get("race")
    noun = {"female": "women", "male": "men"}.get(gender or "", "people")
    if gender and gender not in ("female", "male"):
        noun = f"{gender} people"
    words = []
    if race and race.lower() not in ("other", "others"):
        words.append(race)
    words.append(noun)
    if race and race.lower() in ("other", "others"):
        words.append("of other races")
    for key, value in group.items():
        if key in ("gender", "race"):
            continue
        words.append(f"aged {value}" if key in ("age_band", "age") else f"with {key} {value}")
    return " ".join(words)
