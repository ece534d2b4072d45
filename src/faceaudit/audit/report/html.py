"""report.html: one self-contained page (inline CSS and SVG, no scripts, no network).

The page is templates/report.html.j2 (Jinja2, autoescaped: see templating.py); this module
turns a report into what the template prints -- words and numbers from common.py, plots
from plots.py.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from . import plots
from .common import (
    PROTOCOL_UNITS,
    MetricLayout,
    attribute_order,
    block_title,
    caveats,
    fmt_count,
    fmt_interval,
    fmt_kn,
    fmt_threshold,
    fmt_value,
    gap_rows,
    gap_sentence,
    gaps_sorted,
    group_label,
    layout_metric,
    metric_info,
    metric_order,
    min_cell,
    summary_sentences,
    title,
)
from .schema import SCHEMA_VERSION, group_key
from .templating import Figures, render, svg_markup


def threshold_heading(t, report: dict) -> str:
    return "" if t is None else f"Threshold {fmt_threshold(t, report)}"


def plot_column_title(t, report: dict) -> str:
    """A panel title: 'Threshold 80', or two lines for the target-FMR threshold."""
    return threshold_heading(t, report).replace(" (", "\n(")


def _point(row: dict) -> plots.Point:
    return plots.Point(float(row["value"]), float(row["ci95"][0]), float(row["ci95"][1]),
                       bool(row["small_cell"]))


def metric_plot(report: dict, lay: MetricLayout, fig_id: str) -> plots.Svg:
    order = attribute_order(report)
    info = metric_info(lay.name)
    blocks, points = [], {}
    for bi, (keys, groups) in enumerate(lay.blocks):
        blocks.append(plots.Block(block_title(keys) if len(lay.blocks) > 1 else "",
                                  [group_label(g, order) for g in groups]))
        for ri, g in enumerate(groups):
            for ci, t in enumerate(lay.thresholds):
                row = lay.cells.get((group_key(g), t))
                if row is not None:
                    points[(bi, ri, ci)] = _point(row)
    overall: list[plots.Point | None] | None = [
        (_point(lay.overall[t]) if t in lay.overall else None) for t in lay.thresholds]
    if not blocks:  # only the overall row: plot it as the one row
        blocks = [plots.Block("", ["Everyone"])]
        points = {(0, 0, ci): p for ci, p in enumerate(overall or []) if p is not None}
        overall = None
    unit = PROTOCOL_UNITS.get(report["protocol"], "cases")
    small = f"small sample (under {min_cell(report)} {unit})" if min_cell(report) else "small sample"
    return plots.dot_plot(
        blocks=blocks, columns=[plot_column_title(t, report) for t in lay.thresholds],
        series=[plots.Series("", points)], overall=overall, rate=lay.rate,
        xlabel=info.label + (f" ({info.unit})" if info.unit else ""),
        title=f"{info.label} by group", desc=plot_description(report, lay),
        fig_id=fig_id, small_note=small)


def plot_description(report: dict, lay: MetricLayout) -> str:
    """Alt text: what the plot shows and its extremes, in words."""
    order = attribute_order(report)
    info = metric_info(lay.name)
    parts = [f"Dot plot of {info.noun} for {len(lay.groups)} groups"]
    if lay.thresholds != [None]:
        parts[0] += " at thresholds " + ", ".join(f"{float(t):g}" for t in lay.thresholds if t is not None)
    parts[0] += ", sorted from highest to lowest; bars are 95% intervals, hollow dots small samples."
    for t in lay.thresholds:
        rows = [lay.cells[(group_key(g), t)] for g in lay.groups if (group_key(g), t) in lay.cells]
        if not rows:
            continue
        hi = max(rows, key=lambda r: r["value"])
        lo = min(rows, key=lambda r: r["value"])
        where = f"At threshold {float(t):g}: " if t is not None else ""
        parts.append(f"{where}highest {group_label(hi['group'], order)} "
                     f"{fmt_value(lay.name, hi['value'], lay.rate)}, lowest "
                     f"{group_label(lo['group'], order)} {fmt_value(lay.name, lo['value'], lay.rate)}.")
    parts.append("The table below lists every number.")
    return " ".join(parts)


def metric_table(report: dict[str, Any], lay: MetricLayout) -> dict[str, Any]:
    """What the template's metric table shows: headings, then rows of cells (None: not measured)."""
    order = attribute_order(report)
    info = metric_info(lay.name)
    unit = PROTOCOL_UNITS.get(report["protocol"], "cases")

    def cells(g: dict[str, Any]) -> list[dict[str, str] | None]:
        out: list[dict[str, str] | None] = []
        for t in lay.thresholds:
            row = lay.cells.get((group_key(g), t))
            out.append(None if row is None else {
                "value": fmt_value(lay.name, row["value"], lay.rate), "kn": fmt_kn(row),
                "interval": fmt_interval(lay.name, row["ci95"], lay.rate)})
        return out

    rows: list[dict[str, Any]] = []
    if lay.overall:
        rows.append({"kind": "overall", "cells": cells({})})
    for keys, groups in lay.blocks:
        if len(lay.blocks) > 1:
            rows.append({"kind": "block", "label": block_title(keys)})
        for g in groups:
            small = any(lay.cells.get((group_key(g), t), {}).get("small_cell") for t in lay.thresholds)
            rows.append({"kind": "group", "label": group_label(g, order), "small": small, "cells": cells(g)})
    caption = f"{info.label}: {info.noun} for each group"
    caption += f"; k / n: how many of the n {unit} measured" if lay.rate else f"; n: {unit} measured"
    if min_cell(report):
        caption += f"; “small sample”: fewer than {min_cell(report)} {unit}"
    return {"metric": lay.name, "caption": caption + ".", "multi": lay.thresholds != [None],
            "wide": len(lay.thresholds) > 2, "headings": [threshold_heading(t, report) for t in lay.thresholds],
            "value_head": "Rate" if lay.rate else "Value", "count_head": "k / n" if lay.rate else "n",
            "width": 1 + 3 * len(lay.thresholds), "rows": rows}


def metric_section(report: dict[str, Any], name: str, figs: Figures) -> dict[str, Any]:
    lay = layout_metric(report, name)
    info = metric_info(name)
    if lay.groups:
        caption = ("Dots: each group's value; bars: 95% intervals"
                   + ("; dashed line and grey band: everyone" if lay.overall else "")
                   + ". Groups sorted from highest to lowest"
                   + (" at the first threshold" if len(lay.thresholds) > 1 else "") + ".")
    else:
        caption = "Dot: the value for everyone; bar: its 95% interval."
    return {"metric": name, "label": info.label, "explain": info.explain,
            "better": {"lower": "Lower is better.", "higher": "Higher is better."}.get(info.better, ""),
            "gaps": [gap_sentence(report, g) for g in gaps_sorted(report) if g["metric"] == name],
            "svg": svg_markup(metric_plot(report, lay, figs.next_id())), "caption": caption,
            "table": metric_table(report, lay)}


def det_section(report: dict[str, Any], figs: Figures) -> dict[str, Any] | None:
    curves = [c for c in report.get("curves", []) if c.get("kind") == "det" and c.get("points")]
    if not curves:
        return None
    order = attribute_order(report)
    curves = sorted(curves, key=lambda c: (bool(c["group"]), group_label(c["group"], order)))
    marked = [float(t) for t in report["parameters"].get("thresholds") or []][:len(plots.MARKERS)]
    labelled = [(group_label(c["group"], order), c["group"], c["points"]) for c in curves]
    svg = plots.det_plot(
        curves=labelled, marked_thresholds=marked, fig_id=figs.next_id(),
        title="Trade-off between false matches and missed matches, per group (DET curves)",
        desc=(f"DET curves for {len(curves)} groups: false match rate on a log scale across, missed "
              "match rate up. Each line is a group; lines further right or higher are worse. Markers "
              "show thresholds " + ", ".join(f"{t:g}" for t in marked) + ". The points are in report.json."))
    return {"svg": svg_markup(svg),
            "caption": "Lower left is better. The false match axis is logarithmic: each step is ten times more. "
                       "The curve points are listed in report.json."}


def _json_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def rerun_facts(report: dict[str, Any]) -> dict[str, list[tuple[str, str, bool]]]:
    """(name, value, shown as code) for the rerun section's lists."""
    ds, target, params, sw = report["dataset"], report["target"], report["parameters"], report["software"]
    dataset = [("Name", str(ds["name"]), False)]
    for key in ("root", "images", "pairs"):
        if ds.get(key) is not None:
            dataset.append((key.capitalize(), str(ds[key]) if key == "root" else fmt_count(ds[key]), key == "root"))
    software = [(k.capitalize(), _json_value(v), False) for k, v in sw.items() if k != "packages"]
    packages = sw.get("packages") or {}
    if isinstance(packages, dict) and packages:
        software.append(("Packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items())), False))
    software.append(("faceaudit", str(report["faceaudit_version"]), False))
    return {
        "facts_dataset": dataset,
        "facts_target": [(k.replace("_", " ").capitalize(), _json_value(v), False) for k, v in target.items()],
        "facts_parameters": [(k.replace("_", " ").capitalize(), _json_value(v), False) for k, v in params.items()],
        "facts_software": software,
    }


def render_html(report: dict[str, Any], markdown_name: str = "report.md") -> str:
    """The whole page for a validated report."""
    return render("report.html.j2", **report_context(report, markdown_name))


def report_context(report: dict[str, Any], markdown_name: str = "report.md") -> dict[str, Any]:
    """What report.html.j2 prints for a validated report (the web console renders it in its own frame)."""
    figs = Figures()
    ds, target = report["dataset"], report["target"]
    rows = gap_rows(report)
    sentences = summary_sentences(report)
    extra = [str(target[k]) for k in ("kind", "model_version") if target.get(k) and target[k] != target["name"]]
    return dict(
        version=report["faceaudit_version"], schema_version=SCHEMA_VERSION,
        page_title=f"{title(report)} — {target['name']} on {ds['name']}", title=title(report),
        protocol=report["protocol"], target_name=target["name"], target_extra=", ".join(extra),
        dataset_name=ds["name"], created=report["created"], created_day=report["created"][:10],
        summary=sentences, summary_as_list=len(sentences) > 3,  # many sentences read better one by one
        gap_rows=rows, gaps_with_threshold=any(row.threshold is not None for row in rows),
        caveats=caveats(report),
        threshold_note=report["protocol"] in ("verification", "lineup")
        and bool(report["parameters"].get("thresholds")),
        sections=[metric_section(report, name, figs) for name in metric_order(report)],
        det=det_section(report, figs), command=shlex.join(report["command"]), markdown_name=markdown_name,
        **rerun_facts(report))


__all__ = ["render_html", "report_context"]
