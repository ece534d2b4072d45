"""Audit reports: report.json validation, report.html / report.md rendering, comparisons.

The example reports below are written by hand to follow docs/audit-report-schema.md
exactly (rates are k / n with Wilson intervals; DET curves are smooth per-group
curves that agree with the per-threshold rows), so the renderer is tested against
the contract rather than against whatever a protocol happens to emit today.

The Chromium test renders report.html in a real headless browser (Debian's
`chromium` package). Without it the test is skipped, except under CI=true.

    python tests/audit/test_report.py screenshot docs/audit-report.png   # regenerate the docs image
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceaudit.audit.report import (
    ReportError,
    build_comparison,
    compare_reports,
    load_report,
    validate_report,
    write_report,
)
from faceaudit.audit.report.common import attribute_order, fmt_interval, fmt_kn, fmt_value, group_label, pct
from faceaudit.stats import wilson

# ---------------------------------------------------------------- example reports

GENDERS = ("female", "male")
RACES = ("White", "Black", "Asian", "Indian", "Others")  # UTKFace's labels
SOFTWARE = {"python": "3.11.7", "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
            "packages": {"numpy": "2.4.6", "onnxruntime": "1.22.0", "dlib-bin": "20.0.0",
                         "scipy": "1.16.0"}}


def rate_row(metric: str, group: dict, k: int, n: int, threshold=None, min_cell: int = 30) -> dict:
    r = wilson(k, n)
    return {"metric": metric, "group": group, "threshold": threshold, "value": k / n, "k": k, "n": n,
            "ci95": [r.low, r.high], "ci_method": "wilson", "small_cell": n < min_cell}


def mean_row(metric: str, group: dict, value: float, n: int, spread: float, threshold=None,
             min_cell: int = 30) -> dict:
    half = 1.96 * spread / math.sqrt(n)
    return {"metric": metric, "group": group, "threshold": threshold, "value": value, "n": n,
            "ci95": [max(0.0, value - half), value + half], "ci_method": "bootstrap (2000 resamples)",
            "small_cell": n < min_cell}


def overall_rate(metric: str, rows: list[dict], threshold=None) -> dict:
    k = sum(r["k"] for r in rows)
    n = sum(r["n"] for r in rows)
    return rate_row(metric, {}, k, n, threshold)


def gap(metric: str, rows: list[dict], threshold=None, group_by=("gender", "race")) -> dict:
    cells = [r for r in rows if r["group"] and not r["small_cell"] and r["threshold"] == threshold
             and r["metric"] == metric]
    hi = max(cells, key=lambda r: r["value"])
    lo = min(cells, key=lambda r: r["value"])
    ratio = hi["value"] / lo["value"] if lo["value"] > 0 else None
    diff = hi["value"] - lo["value"]
    return {"metric": metric, "threshold": threshold, "group_by": list(group_by),
            "highest": {"group": hi["group"], "value": hi["value"]},
            "lowest": {"group": lo["group"], "value": lo["value"]},
            "ratio": ratio, "ratio_ci95": None if ratio is None else [ratio / 2.4, ratio * 2.9],
            "difference": diff, "difference_ci95": [diff * 0.55, diff * 1.45],
            "ci_method": "bootstrap (2000 resamples)"}


def base(protocol: str, command_extra: list[str], **dataset) -> dict:
    return {
        "schema_version": 1,
        "faceaudit_version": "0.1.0",
        "protocol": protocol,
        "created": "2026-11-22T01:00:00+00:00",
        "command": ["faceaudit", "audit", protocol, "--data", "/srv/data/faces-dev", "--target", "local",
                    *command_extra, "--out", f"/srv/audits/{protocol}"],
        "dataset": {"name": "faces-dev", "root": "/srv/data/faces-dev", "images": 2808, "pairs": None,
                    "problems": {"missing_files": 0, "unknown_labels": 3, "duplicate_paths": 0, "other": 0},
                    "notes": [], **dataset},
        "target": {"name": "local", "kind": "local", "model_version": "1.0"},
        "software": copy.deepcopy(SOFTWARE),
    }


# gender x race: (errors, faces). Asian men 10.5%, Indian men 1.0%; "Others" men a small cell.
GENDER_ERRORS = {
    ("female", "White"): (7, 260), ("female", "Black"): (14, 200), ("female", "Asian"): (12, 210),
    ("female", "Indian"): (8, 180), ("female", "Others"): (4, 60),
    ("male", "White"): (3, 250), ("male", "Black"): (9, 190), ("male", "Asian"): (21, 200),
    ("male", "Indian"): (2, 200), ("male", "Others"): (3, 26),
}
MISSED = {("female", "White"): 2, ("female", "Black"): 7, ("female", "Asian"): 3, ("female", "Indian"): 4,
          ("female", "Others"): 1, ("male", "White"): 1, ("male", "Black"): 6, ("male", "Asian"): 2,
          ("male", "Indian"): 3, ("male", "Others"): 0}
AGE_MAE = {("female", "White"): 6.1, ("female", "Black"): 7.9, ("female", "Asian"): 5.2,
           ("female", "Indian"): 6.6, ("female", "Others"): 5.9, ("male", "White"): 6.8,
           ("male", "Black"): 8.4, ("male", "Asian"): 5.6, ("male", "Indian"): 7.2, ("male", "Others"): 6.3}


def attributes_report() -> dict:
    r = base("attributes", ["--group-by", "gender,race"], images=1776)
    r["dataset"]["notes"] = ["UTKFace has no identity labels: each image is treated as its own identity"]
    r["parameters"] = {"thresholds": [], "group_by": ["gender", "race"], "seed": 0, "min_cell": 30}
    metrics = []
    for name, table in (("detection_failure_rate", MISSED), ("gender_error_rate", GENDER_ERRORS)):
        rows = []
        for (g, race), v in table.items():
            k = v if name == "detection_failure_rate" else v[0]
            rows.append(rate_row(name, {"gender": g, "race": race}, k, GENDER_ERRORS[(g, race)][1]))
        metrics += [overall_rate(name, rows)] + rows
    age_rows = [mean_row("age_mean_absolute_error", {"gender": g, "race": race}, v,
                         GENDER_ERRORS[(g, race)][1], 5.5) for (g, race), v in AGE_MAE.items()]
    metrics += [mean_row("age_mean_absolute_error", {}, 6.7, 1776, 5.5)] + age_rows
    r["metrics"] = metrics
    r["gaps"] = [gap(m, metrics) for m in ("gender_error_rate", "detection_failure_rate",
                                          "age_mean_absolute_error")]
    r["curves"] = []
    r["summary"] = [
        "The system got the gender of Asian men wrong 10.5% of the time, against 1.0% for Indian men: "
        "about 10 times as often.",
        "It missed the face in 3.5% of photos of Black women and 0.4% of photos of white men.",
        "Age estimates were off by 5.2 to 8.4 years on average, least for Asian women.",
    ]
    return r


# Verification: false match rate at threshold 80 per group (0.6% to 50%), and missed matches.
FMR80 = {("female", "Asian"): 0.50, ("male", "Asian"): 0.31, ("female", "Black"): 0.22,
         ("female", "Others"): 0.20, ("female", "Indian"): 0.15, ("male", "Black"): 0.12,
         ("male", "Others"): 0.10, ("male", "Indian"): 0.09, ("female", "White"): 0.04,
         ("male", "White"): 0.006}
FNMR80 = {("female", "Asian"): 0.006, ("male", "Asian"): 0.008, ("female", "Black"): 0.012,
          ("female", "Others"): 0.02, ("female", "Indian"): 0.01, ("male", "Black"): 0.015,
          ("male", "Others"): 0.018, ("male", "Indian"): 0.011, ("female", "White"): 0.02,
          ("male", "White"): 0.025}
IMPOSTORS = {key: 1200 + 150 * i for i, key in enumerate(FMR80)}
IMPOSTORS[("male", "Others")] = 24  # a small cell: fewer pairs than min_cell
GENUINES = {key: 180 + 20 * i for i, key in enumerate(FMR80)}
GENUINES[("male", "Others")] = 22


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def fmr_at(key, t: float) -> float:  # smooth, falls with the threshold; FMR80 at t = 80
    return 1 / (1 + math.exp(-(_logit(FMR80[key]) - (t - 80) / 4.2)))


def fnmr_at(key, t: float) -> float:  # rises with the threshold; FNMR80 at t = 80
    return 1 / (1 + math.exp(-(_logit(FNMR80[key]) + (t - 80) / 6.0)))


def verification_report(target: str = "local", thresholds=(80, 95, 99), scale: float = 1.0,
                        at_target: float = 97.4) -> dict:
    r = base("verification", ["--thresholds", ",".join(str(t) for t in thresholds)], pairs=2606)
    r["target"] = {"name": target, "kind": "local" if target == "local" else "rekognition",
                   "model_version": "1.0" if target == "local" else "7.0"}
    r["command"][6] = target
    r["parameters"] = {"thresholds": list(thresholds), "group_by": ["gender", "race"],
                       "target_fmr": 0.001, "threshold_at_target_fmr": at_target, "seed": 0,
                       "min_cell": 30}
    metrics, fmr_rows, fnmr_rows = [], [], []
    for t in sorted([*thresholds, at_target]):
        fm = [rate_row("false_match_rate", {"gender": g, "race": race},
                       round(min(1.0, fmr_at((g, race), t) * scale) * IMPOSTORS[(g, race)]),
                       IMPOSTORS[(g, race)], t) for g, race in FMR80]
        fn = [rate_row("false_non_match_rate", {"gender": g, "race": race},
                       round(fnmr_at((g, race), t) * GENUINES[(g, race)]), GENUINES[(g, race)], t)
              for g, race in FMR80]
        fmr_rows += [overall_rate("false_match_rate", fm, t)] + fm
        fnmr_rows += [overall_rate("false_non_match_rate", fn, t)] + fn
    metrics = fmr_rows + fnmr_rows
    r["metrics"] = metrics
    r["gaps"] = ([gap("false_match_rate", metrics, t) for t in thresholds]
                 + [gap("false_non_match_rate", metrics, t) for t in thresholds])
    grid = [50.0 + 0.5 * i for i in range(101)]
    r["curves"] = [{"kind": "det", "group": {"gender": g, "race": race},
                    "points": [{"threshold": t, "fmr": fmr_at((g, race), t), "fnmr": fnmr_at((g, race), t)}
                               for t in grid]} for g, race in FMR80]
    r["curves"].insert(0, {"kind": "det", "group": {}, "points": [
        {"threshold": t,
         "fmr": sum(fmr_at(k, t) * IMPOSTORS[k] for k in FMR80) / sum(IMPOSTORS.values()),
         "fnmr": sum(fnmr_at(k, t) * GENUINES[k] for k in FMR80) / sum(GENUINES.values())} for t in grid]})
    hi80 = next(m for m in metrics if m["metric"] == "false_match_rate" and m["threshold"] == 80
                and m["group"] == {"gender": "female", "race": "Asian"})
    lo80 = next(m for m in metrics if m["metric"] == "false_match_rate" and m["threshold"] == 80
                and m["group"] == {"gender": "male", "race": "White"})
    r["summary"] = [
        f"At the default threshold of 80, photos of two different Asian women were wrongly declared the "
        f"same person in {pct(hi80['value'])} of pairs, against {pct(lo80['value'])} for white men: about "
        f"{hi80['value'] / lo80['value']:.0f} times as often.",
        "Raising the threshold to 99 cuts false matches for every group, but the gap between groups "
        "remains, and more true matches are missed (up to a quarter of same-person pairs).",
    ]
    return r


LINEUP = {"White": (300, 0.05, 0.96, 0.08), "Black": (240, 0.19, 0.90, 0.31), "Asian": (220, 0.24, 0.88, 0.40),
          "Indian": (200, 0.12, 0.93, 0.17), "Others": (20, 0.15, 0.85, 0.2)}


def lineup_report() -> dict:
    r = base("lineup", ["--thresholds", "80,95,99", "--gallery-size", "1000"], images=2808)
    r["parameters"] = {"thresholds": [80, 95, 99], "group_by": ["race"], "gallery_size": 1000,
                       "seed": 0, "min_cell": 30}
    metrics = []
    for t, shrink in ((80, 1.0), (95, 0.35), (99, 0.08)):
        pf = [rate_row("probes_with_false_match_rate", {"race": race}, round(p * shrink * n), n, t)
              for race, (n, p, _, _) in LINEUP.items()]
        hit = [rate_row("rank1_hit_rate", {"race": race}, round(min(1.0, h + (1 - shrink) * 0.02) * n), n, t)
               for race, (n, _, h, _) in LINEUP.items()]
        mean = [mean_row("mean_false_matches_per_probe", {"race": race}, m * shrink, n, 0.9 * shrink, t)
                for race, (n, _, _, m) in LINEUP.items()]
        metrics += [overall_rate("probes_with_false_match_rate", pf, t)] + pf
        metrics += [overall_rate("rank1_hit_rate", hit, t)] + hit
        metrics += mean
    r["metrics"] = metrics
    r["gaps"] = [gap("probes_with_false_match_rate", metrics, t, ["race"]) for t in (80, 95, 99)]
    r["curves"] = []
    r["summary"] = ["Searching a gallery of 1,000 people for someone who is not in it flagged an innocent "
                    "person in 24% of searches for Asian faces and 5.0% for white faces at threshold 80."]
    return r


EXAMPLES = {"attributes": attributes_report, "verification": verification_report, "lineup": lineup_report}


# ---------------------------------------------------------------- HTML helpers

class _Tables(HTMLParser):
    """Every <table data-metric=...>: its rows as lists of cell texts (th and td)."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._metric = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-metric" in attrs:
            self._metric = attrs["data-metric"]
            self.tables[self._metric] = []
        elif self._metric and tag == "tr":
            self._row = []
        elif self._row is not None and tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._metric = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._metric].append(self._row)
            self._row = None
        elif tag in ("th", "td") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(text: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def thresholds_of(report: dict, metric: str) -> list:
    ts = {r["threshold"] for r in report["metrics"] if r["metric"] == metric}
    return ([None] if None in ts else []) + sorted(t for t in ts if t is not None)


# ---------------------------------------------------------------- write_report

@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[dict, dict[str, Path]]]:
    """Each example report, written once for the module: protocol -> (report, paths)."""
    out = {}
    for name, make in EXAMPLES.items():
        report = make()
        out[name] = (report, write_report(report, tmp_path_factory.mktemp(name) / "out"))
    return out


@pytest.fixture(scope="module")
def rekognition_reports(tmp_path_factory) -> dict[str, Path]:
    """Verification reports of a second target: same thresholds, and other thresholds."""
    root = tmp_path_factory.mktemp("rekognition")
    return {"same": write_report(verification_report("rekognition", scale=0.4, at_target=93.1),
                                 root / "same")["json"],
            "other": write_report(verification_report("rekognition", thresholds=(80, 90, 99), scale=0.4,
                                                      at_target=93.1), root / "other")["json"]}

@pytest.mark.parametrize("protocol", list(EXAMPLES))
def test_examples_follow_the_schema(protocol):
    validate_report(EXAMPLES[protocol]())


@pytest.mark.parametrize("protocol", list(EXAMPLES))
def test_write_report_writes_three_files_and_json_round_trips(protocol, written):
    report, paths = written[protocol]
    assert report == EXAMPLES[protocol](), "write_report must not change the report it is given"
    assert set(paths) == {"json", "md", "html"}
    assert [p.name for p in (paths["json"], paths["md"], paths["html"])] == ["report.json", "report.md",
                                                                            "report.html"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == report
    assert load_report(paths["json"]) == report
    assert load_report(paths["json"].parent) == report
    assert sorted(p.name for p in paths["json"].parent.iterdir()) == ["report.html", "report.json", "report.md"]


@pytest.mark.parametrize("protocol", list(EXAMPLES))
def test_html_tables_hold_every_number(protocol, written):
    report, paths = written[protocol]
    text = paths["html"].read_text(encoding="utf-8")
    tables = html_tables(text)
    names = {r["metric"] for r in report["metrics"]}
    assert set(tables) == names
    order = attribute_order(report)
    for name in names:
        rows = {row[0].replace(" small sample", ""): row[1:] for row in tables[name]
                if row and row[0] not in ("Group", "")}
        thresholds = thresholds_of(report, name)
        mine = [r for r in report["metrics"] if r["metric"] == name]
        assert len(rows) == len({group_label(r["group"], order) for r in mine})
        for r in mine:
            cells = rows[group_label(r["group"], order)]
            i = 3 * thresholds.index(r["threshold"])
            rate = r.get("k") is not None
            assert cells[i:i + 3] == [fmt_value(name, r["value"], rate), fmt_kn(r),
                                      fmt_interval(name, r["ci95"], rate)], (name, r["group"], r["threshold"])
            if r["small_cell"]:
                assert any(row[0] == group_label(r["group"], order) + " small sample" for row in tables[name])


def test_html_numbers_read_as_a_person_would_write_them(written):
    text = written["attributes"][1]["html"].read_text(encoding="utf-8")
    row = next(r for r in html_tables(text)["gender_error_rate"] if r[0] == "male · Asian")
    assert row[1:4] == ["10.5%", "21/200", "7.0–15.5%"]
    row = next(r for r in html_tables(text)["gender_error_rate"] if r[0] == "male · Indian")
    assert row[1:4] == ["1.0%", "2/200", "0.27–3.6%"]
    row = next(r for r in html_tables(text)["age_mean_absolute_error"] if r[0] == "male · Black")
    assert row[1:3] == ["8.4 years", "n = 190"]
    # ratios from 10 up are whole numbers, as in report.json (words.RATIO_WHOLE_FROM): 10.5 -> 10×
    assert "10× (4.4× to 30×)" in text and "10.5×" not in text and "male · Asian: 10.5%" in text


def test_html_order_summary_first_then_plots_then_caveats_and_rerun(written):
    report, paths = written["verification"]
    text = paths["html"].read_text(encoding="utf-8")
    h1 = text.index("<h1>")
    summary = text.index(report["summary"][0].split(":")[0].replace("'", "&#x27;"))
    plot = text.index("<svg")
    assert h1 < summary < plot < text.index('id="rerun"')
    assert text.index("What this does and does not show") < text.index('id="rerun"')
    # Largest gaps first: the gaps table is sorted by ratio.
    gaps_table = text[text.index('class="gaps"'):text.index("</table>", text.index('class="gaps"'))]
    ratios = [float(x) for x in re.findall(r'<td class="num">([\d.]+)× \(', gaps_table)]
    assert ratios == sorted(ratios, reverse=True) and len(ratios) >= 3
    # Thresholds side by side, DET curves, the exact command.
    fm = html_tables(text)["false_match_rate"]
    assert [c for c in fm[0] if c] == ["Threshold 80", "Threshold 95",
                                       "Threshold 97.4 (gives 0.10% false matches overall)", "Threshold 99"]
    assert 'id="det"' in text
    assert ("faceaudit audit verification --data /srv/data/faces-dev --target local --thresholds 80,95,99"
            in text)
    for package, version in SOFTWARE["packages"].items():
        assert f"{package} {version}" in text


@pytest.mark.parametrize("protocol", list(EXAMPLES))
def test_html_is_self_contained_and_accessible(protocol, written):
    report, paths = written[protocol]
    text = paths["html"].read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<html lang="en">' in text
    assert "<script" not in text and "<link" not in text and " src=" not in text
    hrefs = re.findall(r'\bhref="([^"]*)"', text)
    assert all(h.startswith("#") or h == "report.md" for h in hrefs), hrefs
    svgs = re.findall(r"<svg\b[^>]*>", text)
    expected = len({r["metric"] for r in report["metrics"]}) + (1 if report["curves"] else 0)
    assert len(svgs) == expected
    assert all('role="img"' in s and "aria-labelledby" in s for s in svgs)
    assert text.count("<title id=") == expected and text.count("<desc id=") == expected
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), "ids must be unique across the inline SVGs"
    assert "<th scope=\"col\"" in text and "<th scope=\"row\"" in text and "<caption>" in text
    assert "What this does and does not show" in text and "How to rerun" in text


def test_small_cells_are_flagged_in_plot_and_table(written):
    text = written["attributes"][1]["html"].read_text(encoding="utf-8")
    assert "male · Others small sample" in [r[0] for r in html_tables(text)["gender_error_rate"]]
    assert "hollow dots small samples" in text  # alt text of every dot plot
    assert "small sample (under 30 faces)" in text  # legend of the dot plots, in their descriptions


@pytest.mark.parametrize("protocol", list(EXAMPLES))
def test_markdown_has_summary_tables_and_link(protocol, written):
    report, paths = written[protocol]
    md = paths["md"].read_text(encoding="utf-8")
    assert md.startswith("# ")
    for sentence in report["summary"]:
        assert sentence in md
    assert "(report.html)" in md and "## How to rerun" in md and "## What this does and does not show" in md
    for r in report["metrics"]:
        rate = r.get("k") is not None
        assert f"| {fmt_kn(r)} | {fmt_interval(r['metric'], r['ci95'], rate)} |" in md.replace("**", "")


def test_unusual_but_valid_reports_render(tmp_path):
    """Overall-only metrics, unknown metric names, marginal groups, unlabelled values, no gaps or summary."""
    report = attributes_report()
    report["metrics"] = [m for m in report["metrics"] if m["metric"] == "gender_error_rate"]
    report["metrics"] += [rate_row("failure_to_enroll_rate", {}, 3, 100),
                          rate_row("gender_error_rate", {"gender": None, "race": "White"}, 3, 40),
                          rate_row("gender_error_rate", {"race": "White"}, 13, 540)]
    report["gaps"], report["summary"] = [], []
    paths = write_report(report, tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    tables = html_tables(text)
    assert set(tables) == {"gender_error_rate", "failure_to_enroll_rate"}
    assert ["unlabelled · White", "7.5%", "3/40", "2.6–19.9%"] in tables["gender_error_rate"]
    assert ["gender × race"] in tables["gender_error_rate"] and ["race"] in tables["gender_error_rate"]
    assert text.count("<svg") == 2 and "states no summary" in text
    assert "| Everyone | 3.0% | 3/100 |" in paths["md"].read_text().replace("**", "")


HOSTILE_GROUP = "<script>alert(1)</script>"
HOSTILE_PATH = '/srv/data/x"><img src=x onerror=alert(2)>'


def _hostile(value):
    """The attributes example with one race, the dataset's root and the target renamed to markup."""
    if isinstance(value, dict):
        return {k: _hostile(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hostile(v) for v in value]
    return HOSTILE_GROUP if value == "Asian" else value


def test_hostile_labels_are_escaped_in_the_html(tmp_path):
    report = _hostile(attributes_report())
    report["dataset"]["root"] = HOSTILE_PATH
    report["dataset"]["name"] = '"><img src=x onerror=alert(3)>'
    report["target"]["name"] = "<b onmouseover=alert(4)>system</b>"
    report["summary"][0] = f"The worst group was {HOSTILE_GROUP} & co."
    paths = write_report(report, tmp_path / "a")
    compared = compare_reports([paths["json"], paths["json"]], tmp_path / "cmp",
                               labels=["<i>first</i>", HOSTILE_GROUP])
    for page in (paths["html"], compared["html"]):
        text = page.read_text(encoding="utf-8")
        # no markup made of a label survives: no script, no img, no handler on a tag
        assert "<script" not in text and "<img" not in text and "<b " not in text and "<i>" not in text
        assert re.search(r"<[a-z][^>]*\son\w+=", text) is None
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    text = paths["html"].read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(2)&gt;" in text and "&lt;b onmouseover=alert(4)&gt;" in text
    assert "The worst group was &lt;script&gt;alert(1)&lt;/script&gt; &amp; co." in text
    # the group is still shown, as text, in the tables and the gaps table
    row = next(r for r in html_tables(text)["gender_error_rate"] if r[0] == f"male · {HOSTILE_GROUP}")
    assert row[1:4] == ["10.5%", "21/200", "7.0–15.5%"]


def test_numpy_numbers_are_written_as_plain_json(tmp_path):
    report = attributes_report()
    row = report["metrics"][1]
    row["k"], row["n"], row["value"] = np.int64(row["k"]), np.int64(row["n"]), np.float64(row["value"])
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["metrics"][1]["k"] == int(row["k"])


def _drop(field):
    def change(r):
        del r[field]
    return change


def _set(path, value):
    def change(r):
        target = r
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


INVALID = {
    "missing metrics": (_drop("metrics"), "missing required field 'metrics'"),
    "missing dataset": (_drop("dataset"), "missing required field 'dataset'"),
    "wrong version": (_set(["schema_version"], 2), "schema_version is 2; this faceaudit reads version 1"),
    "version as text": (_set(["schema_version"], "1"), "schema_version is '1'"),
    "unknown protocol": (_set(["protocol"], "identification"), "'protocol' must be one of"),
    "rate not k/n": (_set(["metrics", 1, "value"], 0.5), "must equal k / n"),
    "rate without k": (lambda r: r["metrics"][1].pop("k"), "a rate must carry 'k'"),
    "missing ci": (lambda r: r["metrics"][2].pop("ci95"), "missing required field 'ci95'"),
    "ci misses value": (_set(["metrics", 1, "ci95"], [0.5, 0.6]), "does not contain the value"),
    "threshold out of range": (_set(["metrics", 1, "threshold"], 180), "'threshold' must be null or a number"),
    "nan value": (_set(["metrics", 1, "value"], float("nan")), "'value' must be a finite number"),
    "gap of no metric": (_set(["gaps", 0, "metric"], "false_match_rate"), "has no rows in 'metrics'"),
    "duplicate row": (lambda r: r["metrics"].append(copy.deepcopy(r["metrics"][1])), "duplicate row"),
    "command as text": (_set(["command"], "faceaudit audit"), "'command' must be list"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_reports_are_refused_with_a_clear_message(case, tmp_path):
    change, message = INVALID[case]
    report = attributes_report()
    change(report)
    with pytest.raises(ReportError) as err:
        write_report(report, tmp_path / "out")
    assert message in str(err.value)
    assert "schema version 1" in str(err.value) and "docs/audit-report-schema.md" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_every_problem_is_listed_at_once():
    report = attributes_report()
    del report["target"]
    report["metrics"][1]["value"] = 0.9
    report["metrics"][2]["small_cell"] = "no"
    with pytest.raises(ReportError) as err:
        validate_report(report)
    assert len(err.value.problems) == 4  # value 0.9 is neither k / n nor inside its interval
    assert "metrics[1] (detection_failure_rate)" in str(err.value)


def test_not_a_dict_and_bad_json_file(tmp_path):
    with pytest.raises(ReportError, match="expected a JSON object"):
        write_report([1, 2], tmp_path)
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        load_report(bad)


# ---------------------------------------------------------------- compare_reports

def test_compare_two_targets(tmp_path, written, rekognition_reports):
    a = written["verification"][1]["json"]
    b = rekognition_reports["other"]
    paths = compare_reports([a, b.parent], tmp_path / "cmp")
    assert {p.name for p in paths.values()} == {"comparison.json", "comparison.md", "comparison.html"}
    comp = json.loads(paths["json"].read_text())
    assert [r["label"] for r in comp["reports"]] == ["local", "rekognition"]
    assert [m["metric"] for m in comp["metrics"]] == ["false_match_rate", "false_non_match_rate"]
    fm = comp["metrics"][0]
    assert fm["columns"] == [{"threshold": t, "at_target_fmr": None} for t in (80, 90, 95, 99)] + [
        {"threshold": None, "at_target_fmr": 0.001}]
    row = next(r for r in fm["rows"] if r["threshold"] == 80 and r["group"] == {"gender": "female", "race": "Asian"})
    assert row["values"][0]["value"] == pytest.approx(0.5, abs=0.001)
    assert row["values"][1]["value"] == pytest.approx(0.2, abs=0.001)
    only_a = next(r for r in fm["rows"] if r["threshold"] == 95 and r["group"] == {})
    assert only_a["values"][1] is None
    # Each system at its own threshold for the same overall false match rate.
    fair = next(r for r in fm["rows"] if r["at_target_fmr"] == 0.001 and r["group"] == {})
    assert [v["threshold"] for v in fair["values"]] == [97.4, 93.1]
    assert any("thresholds differ" in n for n in comp["notes"])
    assert any("own threshold that gives 0.10% false matches" in n for n in comp["notes"])
    html_text = paths["html"].read_text()
    assert html_text.count("<svg") == 2 and "<script" not in html_text
    cells = html_tables(html_text)["false_match_rate"]
    asian80 = next(r for r in cells if r[:2] == ["female · Asian", "80"])
    assert asian80[2].startswith("50.0% [") and asian80[3].startswith("20.0% [")
    md = paths["md"].read_text()
    assert "| female · Asian | 80 | 50.0% [" in md and "(comparison.html)" in md


def test_compare_groups_by_metric_and_refuses_unrelated_protocols(tmp_path, written, rekognition_reports):
    v1, v2 = written["verification"][1]["json"], rekognition_reports["same"]
    at = written["attributes"][1]["json"]
    with pytest.raises(ReportError, match="nothing to compare side by side"):
        compare_reports([v1, at], tmp_path / "no")
    with pytest.raises(ReportError, match="at least two reports"):
        compare_reports([v1], tmp_path / "no")
    comp = json.loads(compare_reports([v1, v2, at], tmp_path / "mixed")["json"].read_text())
    assert {m["metric"] for m in comp["metrics"]} == {"false_match_rate", "false_non_match_rate"}
    assert all(m["protocol"] == "verification" and len(m["reports"]) == 2 for m in comp["metrics"])
    assert {n["metric"] for n in comp["not_compared"]} == {"detection_failure_rate", "gender_error_rate",
                                                           "age_mean_absolute_error"}
    assert any("different protocols" in n for n in comp["notes"])


def test_compare_labels_are_distinct():
    comp = build_comparison([verification_report("local"), verification_report("local", scale=0.5)])
    labels = [r["label"] for r in comp["reports"]]
    assert len(set(labels)) == 2


# ---------------------------------------------------------------- a real browser

def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        message = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true requires it", pytrace=False)
        pytest.skip(message)
    return path


def run_chromium(binary: str, html: Path, *mode: str, width: int = 1280, height: int = 2400) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", *mode, html.as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400, binary: str | None = None) -> None:
    run_chromium(binary or chromium(), html, f"--screenshot={png}", width=width, height=height)


def test_chromium_renders_the_report(tmp_path, written):
    binary = chromium()
    report, paths = written["verification"]
    html = paths["html"]
    dom = run_chromium(binary, html, "--dump-dom")
    expected_plots = len({r["metric"] for r in report["metrics"]}) + 1  # + DET curves
    assert len(re.findall(r"<svg\b", dom)) >= expected_plots
    assert len(re.findall(r"<table\b", dom)) >= expected_plots
    assert report["summary"][1] in dom
    assert "What this does and does not show" in dom

    png = tmp_path / "report.png"
    screenshot(html, png, binary=binary)
    assert png.is_file()
    with Image.open(png) as image:
        assert image.size == (1280, 2400)
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours: the page looks blank"
    not_white = (pixels.min(axis=2) < 235).mean()
    assert not_white > 0.03, f"only {not_white:.1%} of the page is drawn on"
    # The plots are drawn in the palette's colours (the dot plot's blue, at least).
    blue = np.all(np.abs(pixels.astype(int) - [0x00, 0x72, 0xB2]) < 30, axis=2).sum()
    assert blue > 500


def test_chromium_renders_the_comparison(tmp_path, written, rekognition_reports):
    binary = chromium()
    a, b = written["verification"][1]["json"], rekognition_reports["same"]
    html = compare_reports([a, b], tmp_path / "cmp")["html"]
    dom = run_chromium(binary, html, "--dump-dom")
    assert len(re.findall(r"<svg\b", dom)) == 2 and "Read before comparing" in dom


# ---------------------------------------------------------------- docs/audit-report.png

def make_docs_screenshot(png: Path) -> None:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        html = write_report(verification_report(), Path(tmp))["html"]
        shot = Path(tmp) / "shot.png"
        run_chromium(binary, html, f"--screenshot={shot}", width=1280, height=2400)
        with Image.open(shot) as image:
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="PNG", optimize=True)
        png.write_bytes(buf.getvalue())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "screenshot":
        make_docs_screenshot(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "html":
        for name, make in EXAMPLES.items():
            write_report(make(), Path(sys.argv[2]) / name)
    else:
        sys.exit(__doc__)
