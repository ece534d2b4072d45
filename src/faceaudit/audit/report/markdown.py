"""report.md: the report's words and tables as Markdown (plots are in report.html)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection

from .common import (
    PROTOCOL_UNITS,
    MetricLayout,
    attribute_order,
    block_title,
    caveats,
    fmt_count,
    fmt_interval,
    fmt_kn,
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


def cell(x) -> str:
    """Text safe inside a Markdown table cell."""
    return str(x).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(head: list[str], rows: list[list[str]], right: Collection[int] = frozenset()) -> str:
    lines = ["| " + " | ".join(cell(h) for h in head) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def metric_table(report: dict, lay: MetricLayout) -> str:
    order = attribute_order(report)
    multi = lay.thresholds != [None]
    value_head = "Rate" if lay.rate else "Value"
    count_head = "k / n" if lay.rate else "n"
    head = ["Group"]
    for t in lay.thresholds:
        at = f" at {float(t):g}" if multi else ""
        head += [value_head + at, count_head + at, "95% interval" + at]

    def cells(g: dict) -> list[str]:
        out = []
        for t in lay.thresholds:
            row = lay.cells.get((group_key(g), t))
            if row is None:
                out += ["—", "—", "—"]
            else:
                out += [fmt_value(lay.name, row["value"], lay.rate), fmt_kn(row),
                        fmt_interval(lay.name, row["ci95"], lay.rate)]
        return out

    rows = []
    if lay.overall:
        rows.append(["**Everyone**"] + [f"**{c}**" if c != "—" else c for c in cells({})])
    for keys, groups in lay.blocks:
        if len(lay.blocks) > 1:
            rows.append([f"*{block_title(keys)}*"] + [""] * (3 * len(lay.thresholds)))
        for g in groups:
            small = any(lay.cells.get((group_key(g), t), {}).get("small_cell") for t in lay.thresholds)
            rows.append([group_label(g, order) + (" (small sample)" if small else "")] + cells(g))
    return table(head, rows, right=set(range(1, len(head))))


def render_markdown(report: dict, html_name: str = "report.html") -> str:
    ds, target = report["dataset"], report["target"]
    unit = PROTOCOL_UNITS.get(report["protocol"], "cases")
    out = [f"# {title(report)}", "",
           (f"faceaudit {report['protocol']} audit · System audited: **{target['name']}** · "
           f"Dataset: **{ds['name']}** · {report['created'][:10]}"), "",
           f"Plots of every table below: [{html_name}]({html_name}).", "",
           "## In short", ""]
    sentences = summary_sentences(report)
    out += ([" ".join(sentences)] if len(sentences) <= 3 else [f"- {x}" for x in sentences]) + [""]
    gaps = gaps_sorted(report)
    table_rows = gap_rows(report)
    with_threshold = any(row.threshold is not None for row in table_rows)
    if table_rows:
        rows = [[row.measure] + ([row.threshold] if row.threshold is not None else [])
                + [row.highest, row.lowest, row.ratio,
                   row.difference + ("" if row.clear else ", could be no difference")] for row in table_rows]
        head = ["Measure"] + (["Threshold"] if with_threshold else []) + [
            "Highest group", "Lowest group", "Times as high", "Difference"]
        out += [("Largest gaps first (brackets: 95% intervals; small samples are never the highest or "
                "lowest group):"), "",
                table(head, rows, right={len(head) - 2, len(head) - 1} | ({1} if with_threshold else set())), ""]
    out += ["## What this does and does not show", ""]
    out += [f"- {c}" for c in caveats(report)] + [""]
    if report["protocol"] in ("verification", "lineup") and report["parameters"].get("thresholds"):
        out += [("The system calls two faces a match when their similarity (0 to 100) is at least the "
                "*threshold*. A higher threshold gives fewer false matches and more missed ones, so "
                "results are shown at several thresholds side by side."), ""]
    for name in metric_order(report):
        lay = layout_metric(report, name)
        info = metric_info(name)
        better = {"lower": "Lower is better.", "higher": "Higher is better."}.get(info.better, "")
        out += [f"## {info.label}", "", f"{info.explain} {better}".strip(), ""]
        out += [f"- {gap_sentence(report, g)}" for g in gaps if g["metric"] == name]
        if any(g["metric"] == name for g in gaps):
            out.append("")
        note = f"k / n: how many of the n {unit} measured" if lay.rate else f"n: {unit} measured"
        if min_cell(report):
            note += f"; small sample: fewer than {min_cell(report)} {unit}"
        out += [f"`{name}` ({note}). Plot: [{html_name}#{name}]({html_name}#{name}).", "",
                metric_table(report, lay), ""]
    if any(c.get("kind") == "det" for c in report.get("curves", [])):
        out += ["## The trade-off for each group (DET curves)", "",
                (f"Per-group DET curves (false match rate against missed match rate as the threshold "
                f"moves) are plotted in [{html_name}#det]({html_name}#det); their points are in "
                "report.json (`curves`)."), ""]
    params, sw = report["parameters"], report["software"]
    out += ["## How to rerun", "",
            f"With the same dataset at the same place and faceaudit {report['faceaudit_version']}:", "",
            "```sh", shlex.join(report["command"]), "```", ""]
    facts = [("Dataset", ds["name"])] + [(f"Dataset {k}", fmt_count(ds[k])) for k in ("root", "images", "pairs")
                                         if ds.get(k) is not None]
    facts += [(f"Target {k.replace('_', ' ')}", v) for k, v in target.items()]
    facts += [(k.replace("_", " ").capitalize(), v) for k, v in params.items()]
    facts += [(k.capitalize(), v) for k, v in sw.items() if k != "packages"]
    packages = sw.get("packages") or {}
    if isinstance(packages, dict) and packages:
        facts.append(("Packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))))
    facts += [("faceaudit", report["faceaudit_version"]), ("Created", report["created"]),
              ("Schema version", SCHEMA_VERSION)]
    out += [table(["Setting", "Value"], [[k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)]
                                          for k, v in facts]), ""]
    return "\n".join(out)
