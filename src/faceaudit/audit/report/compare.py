"""compare_reports: several report.json side by side (comparison.json, .md and .html).

Rows are matched on (protocol, metric, group, threshold). A metric is only ever compared
with the same metric of the same protocol; anything that has no partner is listed as not
compared, and differences that make a comparison shaky (datasets, groupings, thresholds,
versions) are spelled out at the top.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import plots
from .common import (
    attribute_order,
    block_title,
    fmt_interval,
    fmt_value,
    group_label,
    metric_info,
    metric_order,
    pct,
)
from .markdown import table as md_table
from .render import write_text
from .schema import (
    PROTOCOL_METRICS,
    ReportError,
    group_key,
    is_rate,
    load_report,
    validate_report,
)
from .templating import Figures, render, svg_markup

COMPARISON_VERSION = 1


def _labels(reports: list[dict], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(reports) or len(set(labels)) != len(labels):
            raise ReportError(["labels must be distinct, one per report"], "comparison")
        return list(labels)
    out = [r["target"]["name"] for r in reports]
    for extra in (lambda r: r["dataset"]["name"],
                  lambda r: "thresholds " + ", ".join(f"{float(t):g}" for t in r["parameters"].get("thresholds") or []),
                  lambda r: r["created"][:19]):
        dupes = {x for x in out if out.count(x) > 1}
        if not dupes:
            break
        out = [f"{x} · {extra(r)}" if x in dupes else x for x, r in zip(out, reports)]
    dupes = {x for x in out if out.count(x) > 1}
    return [f"{x} #{i + 1}" if x in dupes else x for i, x in enumerate(out)]


def _notes(reports: list[dict], labels: list[str]) -> list[str]:
    notes = []

    def differs(fn) -> bool:
        return len({json.dumps(fn(r), sort_keys=True) for r in reports}) > 1

    def listing(fn) -> str:
        return "; ".join(f"{lab}: {fn(r)}" for lab, r in zip(labels, reports))

    if differs(lambda r: r["protocol"]):
        notes.append("The reports come from different protocols (" + listing(lambda r: r["protocol"])
                     + "). Only the same measure of the same protocol is compared; the rest is "
                     "listed under “Not compared”.")
    if differs(lambda r: [r["dataset"].get(k) for k in ("name", "root", "images", "pairs")]):
        notes.append("The reports used different data (" + listing(
            lambda r: f"{r['dataset']['name']}, {r['dataset'].get('images', '?')} images")
            + "): differences may come from the photos, not the systems.")
    if differs(lambda r: r["parameters"].get("group_by")):
        notes.append("Groups were defined differently (" + listing(
            lambda r: " × ".join(r["parameters"].get("group_by") or []) or "none")
            + "): only groups present in several reports line up.")
    if differs(lambda r: r["parameters"].get("thresholds")):
        notes.append("The thresholds differ (" + listing(
            lambda r: ", ".join(f"{float(t):g}" for t in r["parameters"].get("thresholds") or []) or "none")
            + "): reports are compared at the same threshold only; “—” means not measured.")
    fmrs = {r["parameters"].get("target_fmr") for r in reports}
    if len(fmrs) == 1 and None not in fmrs and all(
            r["parameters"].get("threshold_at_target_fmr") is not None for r in reports):
        notes.append(f"Each report is also shown at its own threshold that gives {pct(next(iter(fmrs)))} false "
                     "matches overall (" + listing(lambda r: f"{float(r['parameters']['threshold_at_target_fmr']):g}")
                     + "): the fair way to compare systems whose similarity scores are not on the same scale.")
    if differs(lambda r: r["parameters"].get("min_cell")):
        notes.append("“Small sample” means different sizes (" + listing(
            lambda r: r["parameters"].get("min_cell")) + ").")
    if differs(lambda r: r["faceaudit_version"]):
        notes.append("Different faceaudit versions made these reports ("
                     + listing(lambda r: r["faceaudit_version"]) + ").")
    notes.append("Two values whose 95% intervals overlap may not really differ.")
    return notes


def _column_key(report: dict, row: dict, shared_fmr) -> tuple:
    """Where a row goes: (0,) no threshold; (1, t) threshold t; (2, fmr) each report's own
    threshold that gives the same target false match rate overall (the fair comparison of
    two systems whose similarity scores are not on the same scale)."""
    t = row["threshold"]
    if t is None:
        return (0, 0.0)
    at = report["parameters"].get("threshold_at_target_fmr")
    if shared_fmr is not None and isinstance(at, (int, float)) and abs(float(at) - float(t)) < 1e-9:
        return (2, float(shared_fmr))
    return (1, float(t))


def _column(key: tuple) -> dict:
    return {"threshold": key[1] if key[0] == 1 else None, "at_target_fmr": key[1] if key[0] == 2 else None}


def column_title(col: dict) -> str:
    if col["at_target_fmr"] is not None:
        return f"At {pct(col['at_target_fmr'])} false matches overall (each report's own threshold)"
    return "" if col["threshold"] is None else f"Threshold {float(col['threshold']):g}"


def _compare_metric(protocol: str, name: str, reports: list[dict], idx: list[int],
                    labels: list[str]) -> dict:
    fmrs = {reports[i]["parameters"].get("target_fmr") for i in idx}
    ats = [reports[i]["parameters"].get("threshold_at_target_fmr") for i in idx]
    shared_fmr = next(iter(fmrs)) if len(fmrs) == 1 and None not in fmrs and None not in ats else None
    cells: dict[tuple, dict[int, dict]] = {}
    groups: dict[tuple, dict] = {}
    for i in idx:
        for row in reports[i]["metrics"]:
            if row["metric"] != name:
                continue
            key = (group_key(row["group"]), _column_key(reports[i], row, shared_fmr))
            cells.setdefault(key, {})[i] = row
            groups.setdefault(group_key(row["group"]), row["group"])
    col_keys = sorted({c for _, c in cells})
    order = attribute_order(reports[idx[0]])

    def sort_key(gk):
        for c in col_keys:
            for i in idx:
                row = cells.get((gk, c), {}).get(i)
                if row is not None:
                    return (0, -float(row["value"]))
        return (1, 0.0)

    by_keys: dict[tuple, list[tuple]] = {}
    for gk, g in groups.items():
        keys = tuple(sorted(g, key=lambda k: order.index(k) if k in order else len(order)))
        by_keys.setdefault(keys, []).append(gk)
    blocks = [(keys, sorted(gks, key=sort_key)) for keys, gks in
              sorted(by_keys.items(), key=lambda kv: (len(kv[0]), kv[0]))]
    rows = []
    for ci, c in enumerate(col_keys):
        for _keys, gks in blocks:
            for gk in gks:
                values = []
                for i in idx:
                    row = cells.get((gk, c), {}).get(i)
                    values.append(None if row is None else {
                        k: row.get(k) for k in ("threshold", "value", "k", "n", "ci95", "ci_method",
                                                "small_cell")})
                if any(v is not None for v in values):
                    rows.append({"group": groups[gk], **_column(c), "values": values, "_col": ci})
    rate = all(is_rate(r) for i in idx for r in reports[i]["metrics"] if r["metric"] == name)
    return {"protocol": protocol, "metric": name, "rate": rate, "reports": [labels[i] for i in idx],
            "columns": [_column(c) for c in col_keys], "rows": rows,
            "_blocks": [(keys, [groups[gk] for gk in gks]) for keys, gks in blocks], "_order": order}


def build_comparison(reports: list[dict], labels: list[str] | None = None,
                     sources: list[str] | None = None) -> dict:
    """The comparison as data (what comparison.json holds, plus private layout keys '_...')."""
    if len(reports) < 2:
        raise ReportError([f"a comparison needs at least two reports, got {len(reports)}"], "comparison")
    for i, r in enumerate(reports):
        validate_report(r, what=f"report {i + 1}" + (f" ({sources[i]})" if sources else ""))
    labels = _labels(reports, labels)
    present: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(reports):
        for name in metric_order(r):
            present.setdefault((r["protocol"], name), []).append(i)
    compared = {k: v for k, v in present.items() if len(v) >= 2}
    if not compared:
        raise ReportError(
            ["no measure appears in more than one report, so there is nothing to compare side by side: "
             + "; ".join(f"{lab} is a {r['protocol']} report ({', '.join(metric_order(r))})"
                         for lab, r in zip(labels, reports))
             + ". Reports of different protocols measure different things."], "comparison")
    protocols = list(PROTOCOL_METRICS) + sorted({p for p, _ in present} - set(PROTOCOL_METRICS))

    def rank(key):
        protocol, name = key
        known = PROTOCOL_METRICS.get(protocol, ())
        return (protocols.index(protocol), known.index(name) if name in known else len(known), name)

    metrics = [_compare_metric(p, m, reports, compared[(p, m)], labels) for p, m in sorted(compared, key=rank)]
    not_compared = [{"protocol": p, "metric": m, "report": labels[v[0]]}
                    for (p, m), v in sorted(present.items(), key=lambda kv: rank(kv[0])) if len(v) < 2]
    return {
        "comparison_version": COMPARISON_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "reports": [{"label": lab, "source": (sources[i] if sources else None), "protocol": r["protocol"],
                     "target": r["target"], "dataset": r["dataset"]["name"], "created": r["created"],
                     "faceaudit_version": r["faceaudit_version"],
                     "thresholds": r["parameters"].get("thresholds"),
                     "target_fmr": r["parameters"].get("target_fmr"),
                     "threshold_at_target_fmr": r["parameters"].get("threshold_at_target_fmr")}
                    for i, (lab, r) in enumerate(zip(labels, reports))],
        "notes": _notes(reports, labels),
        "metrics": metrics,
        "not_compared": not_compared,
    }


def _cell_text(name: str, v: dict | None, rate: bool, row: dict) -> str:
    if v is None:
        return "—"
    text = f"{fmt_value(name, v['value'], rate)} [{fmt_interval(name, v['ci95'], rate)}]"
    if row["at_target_fmr"] is not None and v.get("threshold") is not None:
        text += f" at threshold {float(v['threshold']):g}"
    return text + (" (small sample)" if v.get("small_cell") else "")


def _threshold_text(row: dict) -> str:
    if row["at_target_fmr"] is not None:
        return f"own, for {pct(row['at_target_fmr'])} false matches"
    return "—" if row["threshold"] is None else f"{float(row['threshold']):g}"


def _plot(m: dict, fig_id: str) -> plots.Svg:
    info = metric_info(m["metric"])
    order = m["_order"]
    blocks, key_index = [], {}
    for bi, (keys, groups) in enumerate(m["_blocks"]):
        blocks.append(plots.Block(block_title(keys) if len(m["_blocks"]) > 1 else "",
                                  [group_label(g, order) for g in groups]))
        for ri, g in enumerate(groups):
            key_index[group_key(g)] = (bi, ri)
    columns = m["columns"]
    series = []
    for si, label in enumerate(m["reports"]):
        points = {}
        for row in m["rows"]:
            v = row["values"][si]
            if v is None:
                continue
            bi, ri = key_index[group_key(row["group"])]
            points[(bi, ri, row["_col"])] = plots.Point(
                float(v["value"]), float(v["ci95"][0]), float(v["ci95"][1]), bool(v.get("small_cell")))
        series.append(plots.Series(label, points, plots.PALETTE[si % len(plots.PALETTE)],
                                   plots.MARKERS[si % len(plots.MARKERS)]))
    desc = (f"Dot plot comparing {info.noun} across {len(m['reports'])} reports ("
            + ", ".join(m["reports"]) + f") for {sum(len(b.rows) for b in blocks)} groups; each report has "
            "its own colour and marker shape; bars are 95% intervals. The table below lists every number.")
    return plots.dot_plot(blocks=blocks, columns=[column_title(c).replace(" (", "\n(") for c in columns],
                          series=series, overall=None, rate=m["rate"],
                          xlabel=info.label + (f" ({info.unit})" if info.unit else ""),
                          title=f"{info.label}: comparison by group", desc=desc, fig_id=fig_id)


def render_comparison_html(comp: dict[str, Any]) -> str:
    return render("comparison.html.j2", **comparison_context(comp))


def comparison_context(comp: dict[str, Any]) -> dict[str, Any]:
    """What comparison.html.j2 prints for a comparison (the web console renders it in its own frame)."""
    figs = Figures("cmp")
    reports = [{"label": r["label"], "protocol": r["protocol"], "system": r["target"].get("name"),
                "dataset": r["dataset"],
                "thresholds": ", ".join(f"{float(t):g}" for t in r["thresholds"] or []) or "—",
                "created": r["created"][:10], "source": r["source"] or ""} for r in comp["reports"]]
    metrics = []
    for m in comp["metrics"]:
        info = metric_info(m["metric"])
        metrics.append({
            "id": f'{m["protocol"]}-{m["metric"]}', "metric": m["metric"], "protocol": m["protocol"],
            "label": info.label, "explain": info.explain,
            "better": {"lower": "Lower is better.", "higher": "Higher is better."}.get(info.better, ""),
            "svg": svg_markup(_plot(m, figs.next_id())), "reports": m["reports"],
            "with_threshold": any(c["threshold"] is not None or c["at_target_fmr"] is not None
                                  for c in m["columns"]),
            "rows": [{"overall": not row["group"], "group": group_label(row["group"], m["_order"]),
                      "threshold": _threshold_text(row),
                      "cells": [_cell_text(m["metric"], v, m["rate"], row) for v in row["values"]]}
                     for row in m["rows"]]})
    not_compared = [{"label": metric_info(n["metric"]).label, "protocol": n["protocol"], "metric": n["metric"],
                     "report": n["report"]} for n in comp["not_compared"]]
    return {"version": "",
            "page_title": "faceaudit comparison: " + ", ".join(r["label"] for r in comp["reports"]),
            "reports": reports, "notes": comp["notes"], "metrics": metrics, "not_compared": not_compared,
            "comparison_version": COMPARISON_VERSION, "created": comp["created"]}


def render_comparison_markdown(comp: dict) -> str:
    out = [f"# {len(comp['reports'])} audit reports side by side", "",
           "Plots: [comparison.html](comparison.html).", "",
           md_table(["Report", "Protocol", "System", "Dataset", "Thresholds", "Created"],
                    [[r["label"], r["protocol"], r["target"].get("name"), r["dataset"],
                      ", ".join(f"{float(t):g}" for t in r["thresholds"] or []) or "—", r["created"][:10]]
                     for r in comp["reports"]]), "",
           "## Read before comparing", ""] + [f"- {n}" for n in comp["notes"]] + [""]
    for m in comp["metrics"]:
        info = metric_info(m["metric"])
        multi_t = any(c["threshold"] is not None or c["at_target_fmr"] is not None for c in m["columns"])
        head = ["Group"] + (["Threshold"] if multi_t else []) + m["reports"]
        rows = [[group_label(row["group"], m["_order"])]
                + ([_threshold_text(row)] if multi_t else [])
                + [_cell_text(m["metric"], v, m["rate"], row) for v in row["values"]] for row in m["rows"]]
        out += [f"## {info.label} ({m['protocol']}: `{m['metric']}`)", "",
                f"{info.explain} Value [95% interval]; — means not measured.".strip(), "",
                md_table(head, rows, right=set(range(1, len(head)))), ""]
    if comp["not_compared"]:
        out += ["## Not compared", ""] + [
            f"- {metric_info(n['metric']).label} ({n['protocol']}: `{n['metric']}`) is only in {n['report']}."
            for n in comp["not_compared"]] + [""]
    return "\n".join(out)


def compare_reports(paths: list, out_dir, labels: list[str] | None = None) -> dict[str, Path]:
    """Compare several report.json files (or folders holding one) side by side.

    Writes comparison.json, comparison.md and comparison.html into ``out_dir`` and returns
    {"json": ..., "md": ..., "html": ...}. Raises ReportError if a report is invalid, if
    fewer than two are given, or if no measure appears in two reports. ``labels`` names the
    reports (default: the target's name, made distinct with the dataset or date).
    """
    sources = [str(Path(p) / "report.json" if Path(p).is_dir() else Path(p)) for p in paths]
    reports = [load_report(p) for p in paths]
    comp = build_comparison(reports, labels, sources)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths_out = {"json": out / "comparison.json", "md": out / "comparison.md", "html": out / "comparison.html"}
    public = dict(comp, metrics=[
        {**{k: v for k, v in m.items() if not k.startswith("_")},
         "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in m["rows"]]}
        for m in comp["metrics"]])
    write_text(paths_out["json"], json.dumps(public, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    write_text(paths_out["md"], render_comparison_markdown(comp))
    write_text(paths_out["html"], render_comparison_html(comp))
    return paths_out


__all__ = ["COMPARISON_VERSION", "build_comparison", "compare_reports", "comparison_context"]
