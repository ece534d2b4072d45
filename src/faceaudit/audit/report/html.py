"""report.html: one self-contained page (inline CSS and SVG, no scripts, no network)."""

from __future__ import annotations

import json
import shlex
from html import escape
from string import Template

from . import plots
from .common import (PROTOCOL_UNITS, MetricLayout, attribute_order, block_title, caveats, fmt_count,
                     fmt_interval, fmt_kn, fmt_threshold, fmt_value, gap_rows, gap_sentence, gaps_sorted,
                     group_label, layout_metric, metric_info, metric_order, min_cell, summary_sentences, title)
from .schema import SCHEMA_VERSION, group_key

CSS = """
:root { --ink: #1d1d1f; --muted: #555; --rule: #d0d0d0; --soft: #f4f6f8; --accent: #0072B2;
        --warn: #8a4b00; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 80rem; margin: 0 auto; padding: 2rem 2rem 3rem; }
header { border-bottom: 3px solid var(--ink); margin-bottom: 1.5rem; padding-bottom: 1rem; }
.kicker { text-transform: uppercase; letter-spacing: .08em; font-size: .8rem; color: var(--muted);
          margin: 0 0 .3rem; }
h1 { font-size: 2rem; line-height: 1.2; margin: 0 0 .6rem; }
h2 { font-size: 1.4rem; margin: 2.4rem 0 .5rem; line-height: 1.25; }
h3 { font-size: 1.1rem; margin: 1.6rem 0 .4rem; }
.meta { color: var(--muted); margin: 0; }
.meta strong { color: var(--ink); }
.lede { font-size: 1.2rem; line-height: 1.55; margin: 0 0 1rem; max-width: 52rem; }
ul.lede { font-size: 1.08rem; padding-left: 1.3rem; }
ul.lede li { margin: .3rem 0; }
.explain { max-width: 52rem; }
ul.gaps { max-width: 52rem; border-left: 4px solid var(--accent); margin: .8rem 0; padding: .1rem 0 .1rem 2rem; }
ul.gaps li { margin: .25rem 0; }
aside.caveats { background: var(--soft); border: 1px solid var(--rule); border-left: 6px solid var(--ink);
                border-radius: 4px; padding: .4rem 1.4rem 1rem; margin: 2rem 0; }
aside.caveats h2 { margin-top: .8rem; font-size: 1.25rem; }
aside.caveats li { margin: .35rem 0; max-width: 60rem; }
figure { margin: 1rem 0 .5rem; break-inside: avoid; page-break-inside: avoid; }
figure svg { display: block; }
figcaption { color: var(--muted); font-size: .92rem; max-width: 52rem; margin-top: .3rem; }
.table-wrap { overflow-x: auto; margin: .8rem 0 1.2rem; }
table { border-collapse: collapse; font-size: .92rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); padding: 0 0 .4rem; font-size: .92rem; max-width: 52rem; }
th, td { padding: .28rem .7rem; border-bottom: 1px solid var(--rule); vertical-align: top; }
thead th { border-bottom: 2px solid var(--ink); text-align: left; white-space: nowrap; }
thead th.num, td.num { text-align: right; white-space: nowrap; }
thead tr.thresholds th { text-align: center; border-bottom: 1px solid var(--rule); white-space: normal; }
table.wide { font-size: .8rem; }
table.wide th, table.wide td { padding: .25rem .35rem; }
th.group-start, td.group-start { border-left: 1px solid var(--rule); }
tbody th { text-align: left; font-weight: normal; white-space: nowrap; }
tbody tr.overall th, tbody tr.overall td { font-weight: 600; background: var(--soft); }
tbody th.block { font-weight: 600; color: var(--muted); background: #fff; padding-top: .8rem; }
.flag { display: inline-block; font-size: .75rem; font-style: italic; color: var(--warn);
        border: 1px solid currentColor; border-radius: 3px; padding: 0 .3rem; margin-left: .4rem; }
td.missing { color: var(--muted); }
td.nowrap { white-space: nowrap; }
td.num.wrap { white-space: normal; max-width: 11rem; }
pre { background: var(--soft); border: 1px solid var(--rule); padding: .8rem 1rem; overflow-x: auto;
      white-space: pre-wrap; word-break: break-all; font-size: .88rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; margin: .6rem 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; word-break: break-word; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; border-top: 1px solid var(--rule);
         padding-top: .8rem; }
a { color: var(--accent); }
@media (max-width: 40rem) { main { padding: 1rem; } h1 { font-size: 1.5rem; } }
@media print {
  html { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  a { color: inherit; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  tr, aside.caveats, pre { break-inside: avoid; page-break-inside: avoid; }
  table { font-size: 9pt; } table.wide { font-size: 6.5pt; }
  table.wide th, table.wide td { padding: .1rem .2rem; }
  .table-wrap { overflow: visible; }
  aside.caveats, tbody tr.overall th, tbody tr.overall td { -webkit-print-color-adjust: exact;
                                                           print-color-adjust: exact; }
}
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="faceaudit $version">
<title>$title</title>
<style>$css</style>
</head>
<body>
<main>
$body
</main>
</body>
</html>
""")


def _e(x) -> str:
    return escape(str(x), quote=True)


class _Figures:
    """Numbers figures within one page, so that SVG ids never clash."""

    def __init__(self, prefix: str = "fig"):
        self.prefix, self.count = prefix, 0

    def next_id(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"


def figure(svg: plots.Svg, caption: str) -> str:
    return f"<figure>\n{svg.text}\n<figcaption>{_e(caption)}</figcaption>\n</figure>"


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
    overall = [(_point(lay.overall[t]) if t in lay.overall else None) for t in lay.thresholds]
    if not blocks:  # only the overall row: plot it as the one row
        blocks = [plots.Block("", ["Everyone"])]
        points = {(0, 0, ci): p for ci, p in enumerate(overall) if p is not None}
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


def metric_table(report: dict, lay: MetricLayout) -> str:
    order = attribute_order(report)
    info = metric_info(lay.name)
    unit = PROTOCOL_UNITS.get(report["protocol"], "cases")
    value_head = "Rate" if lay.rate else "Value"
    count_head = "k / n" if lay.rate else "n"
    multi = lay.thresholds != [None]
    head = []
    if multi:
        head.append('<tr class="thresholds"><td></td>' + "".join(
            f'<th scope="colgroup" colspan="3" class="group-start">{_e(threshold_heading(t, report))}</th>'
            for t in lay.thresholds) + "</tr>")
    cols = "".join(f'<th scope="col" class="num{" group-start" if multi else ""}">{value_head}</th>'
                   f'<th scope="col" class="num">{count_head}</th>'
                   f'<th scope="col" class="num">95% interval</th>' for _ in lay.thresholds)
    head.append(f'<tr><th scope="col">Group</th>{cols}</tr>')

    def cells(g: dict) -> str:
        out = []
        for t in lay.thresholds:
            row = lay.cells.get((group_key(g), t))
            start = " group-start" if multi else ""
            if row is None:
                out.append(f'<td class="num missing{start}">—</td><td class="num missing">—</td>'
                           f'<td class="num missing">—</td>')
            else:
                out.append(f'<td class="num{start}">{_e(fmt_value(lay.name, row["value"], lay.rate))}</td>'
                           f'<td class="num">{_e(fmt_kn(row))}</td>'
                           f'<td class="num">{_e(fmt_interval(lay.name, row["ci95"], lay.rate))}</td>')
        return "".join(out)

    def small(g: dict) -> bool:
        return any(lay.cells.get((group_key(g), t), {}).get("small_cell") for t in lay.thresholds)

    body = []
    if lay.overall:
        body.append(f'<tr class="overall"><th scope="row">Everyone</th>{cells({})}</tr>')
    width = 1 + 3 * len(lay.thresholds)
    for keys, groups in lay.blocks:
        if len(lay.blocks) > 1:
            body.append(f'<tr><th scope="rowgroup" colspan="{width}" class="block">'
                        f'{_e(block_title(keys))}</th></tr>')
        for g in groups:
            flag = ' <span class="flag">small sample</span>' if small(g) else ""
            cls = ' class="small"' if small(g) else ""
            body.append(f'<tr{cls}><th scope="row">{_e(group_label(g, order))}{flag}</th>{cells(g)}</tr>')
    caption = f"{info.label}: {info.noun} for each group"
    if lay.rate:
        caption += f"; k / n: how many of the n {unit} measured"
    else:
        caption += f"; n: {unit} measured"
    if min_cell(report):
        caption += f"; “small sample”: fewer than {min_cell(report)} {unit}"
    caption += "."
    wide = ' class="wide"' if len(lay.thresholds) > 2 else ""
    return (f'<div class="table-wrap"><table{wide} data-metric="{_e(lay.name)}">\n<caption>{_e(caption)}</caption>\n'
            f"<thead>\n{chr(10).join(head)}\n</thead>\n<tbody>\n{chr(10).join(body)}\n</tbody>\n</table></div>")


def gaps_table(report: dict) -> str:
    table_rows = gap_rows(report)
    with_threshold = any(row.threshold is not None for row in table_rows)
    rows = []
    for row in table_rows:
        unclear = "" if row.clear else '<br><span class="flag">could be no difference</span>'
        threshold = f'<td class="num wrap">{_e(row.threshold)}</td>' if row.threshold is not None else ""
        rows.append(
            f'<tr><th scope="row"><a href="#{_e(row.metric)}">{_e(row.measure)}</a></th>{threshold}'
            f'<td class="nowrap">{_e(row.highest)}</td><td class="nowrap">{_e(row.lowest)}</td>'
            f'<td class="num">{_e(row.ratio)}</td><td class="num">{_e(row.difference)}{unclear}</td></tr>')
    if not rows:
        return ""
    threshold_head = '<th scope="col" class="num">Threshold</th>' if with_threshold else ""
    return ('<div class="table-wrap"><table class="gaps">\n<caption>Largest gaps first. Brackets: 95% '
            'intervals. Small samples are never used as the highest or lowest group. “Could be no '
            'difference”: the interval of the difference includes 0.</caption>\n'
            f'<thead><tr><th scope="col">Measure</th>{threshold_head}'
            '<th scope="col">Highest group</th><th scope="col">Lowest group</th>'
            '<th scope="col" class="num">Times as high</th><th scope="col" class="num">Difference</th>'
            f'</tr></thead>\n<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table></div>')


def _facts(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _json_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def rerun_section(report: dict) -> str:
    ds, target, params, sw = report["dataset"], report["target"], report["parameters"], report["software"]
    command = shlex.join(report["command"])
    dataset = [("Name", _e(ds["name"]))]
    for key in ("root", "images", "pairs"):
        if ds.get(key) is not None:
            dataset.append((key.capitalize(), f"<code>{_e(ds[key])}</code>" if key == "root"
                            else _e(fmt_count(ds[key]))))
    tgt = [(k.replace("_", " ").capitalize(), _e(_json_value(v))) for k, v in target.items()]
    prm = [(k.replace("_", " ").capitalize(), _e(_json_value(v))) for k, v in params.items()]
    soft = [(k.capitalize(), _e(_json_value(v))) for k, v in sw.items() if k != "packages"]
    packages = sw.get("packages") or {}
    if isinstance(packages, dict) and packages:
        soft.append(("Packages", _e(", ".join(f"{k} {v}" for k, v in sorted(packages.items())))))
    soft.append(("faceaudit", _e(report["faceaudit_version"])))
    return f"""<section id="rerun" aria-labelledby="rerun-h">
<h2 id="rerun-h">How to rerun</h2>
<p class="explain">With the same dataset at the same place and faceaudit {_e(report['faceaudit_version'])},
this command reproduces the audit (a different version or target may give different numbers):</p>
<pre><code>{_e(command)}</code></pre>
<h3>Dataset</h3>
{_facts(dataset)}
<h3>System audited (target)</h3>
{_facts(tgt)}
<h3>Parameters</h3>
{_facts(prm)}
<h3>Software</h3>
{_facts(soft)}
<p class="explain">Report created {_e(report['created'])}; report.json schema version {SCHEMA_VERSION}.
Every number on this page is in report.json beside it.</p>
</section>"""


def header(report: dict) -> str:
    ds, target = report["dataset"], report["target"]
    target_text = f"<strong>{_e(target['name'])}</strong>"
    extra = [str(target[k]) for k in ("kind", "model_version") if target.get(k) and target[k] != target["name"]]
    if extra:
        target_text += f" ({_e(', '.join(extra))})"
    when = report["created"][:10]
    return f"""<header>
<p class="kicker">faceaudit {_e(report['protocol'])} audit</p>
<h1>{_e(title(report))}</h1>
<p class="meta">System audited: {target_text} · Dataset: <strong>{_e(ds['name'])}</strong>
· <time datetime="{_e(report['created'])}">{_e(when)}</time></p>
</header>"""


def det_section(report: dict, figs: _Figures) -> str:
    curves = [c for c in report.get("curves", []) if c.get("kind") == "det" and c.get("points")]
    if not curves:
        return ""
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
    return f"""<section id="det" aria-labelledby="det-h">
<h2 id="det-h">The trade-off for each group (DET curves)</h2>
<p class="explain">Raising the threshold cuts false matches (lines move left) but misses more true
matches (lines move up). Each line is one group; a line further right or higher means more errors of
one kind for the same amount of the other. Markers show where the thresholds above fall.</p>
{figure(svg, "Lower left is better. The false match axis is logarithmic: each step is ten times more. "
              "The curve points are listed in report.json.")}
</section>"""


def metric_section(report: dict, name: str, figs: _Figures) -> str:
    lay = layout_metric(report, name)
    info = metric_info(name)
    gaps = [g for g in gaps_sorted(report) if g["metric"] == name]
    gap_html = ('<ul class="gaps">' + "".join(f"<li>{_e(gap_sentence(report, g))}</li>" for g in gaps)
                + "</ul>") if gaps else ""
    better = {"lower": "Lower is better.", "higher": "Higher is better."}.get(info.better, "")
    svg = metric_plot(report, lay, figs.next_id())
    if lay.groups:
        caption = ("Dots: each group's value; bars: 95% intervals"
                   + ("; dashed line and grey band: everyone" if lay.overall else "")
                   + ". Groups sorted from highest to lowest"
                   + (" at the first threshold" if len(lay.thresholds) > 1 else "") + ".")
    else:
        caption = "Dot: the value for everyone; bar: its 95% interval."
    return f"""<section id="{_e(name)}" aria-labelledby="{_e(name)}-h">
<h2 id="{_e(name)}-h">{_e(info.label)}</h2>
<p class="explain">{_e(info.explain)} {better}</p>
{gap_html}
{figure(svg, caption)}
{metric_table(report, lay)}
</section>"""


def render_html(report: dict, markdown_name: str = "report.md") -> str:
    """The whole page for a validated report."""
    figs = _Figures()
    sentences = summary_sentences(report)
    if len(sentences) <= 3:
        summary = f'<p class="lede">{_e(" ".join(sentences))}</p>'
    else:  # many sentences read better one by one
        summary = '<ul class="lede">' + "".join(f"<li>{_e(x)}</li>" for x in sentences) + "</ul>"
    th = report["parameters"].get("thresholds")
    threshold_note = ""
    if report["protocol"] in ("verification", "lineup") and th:
        threshold_note = ('<p class="explain">The system calls two faces a match when their similarity '
                          "(0 to 100) is at least the <em>threshold</em>. A higher threshold gives fewer "
                          "false matches and more missed ones, so results are shown at several "
                          "thresholds side by side.</p>")
    gaps = gaps_table(report)
    body = [
        header(report),
        '<section aria-labelledby="summary-h">\n<h2 id="summary-h">In short</h2>'
        f'\n{summary}\n{gaps}\n</section>',
        '<aside class="caveats" aria-labelledby="caveats-h">\n'
        '<h2 id="caveats-h">What this does and does not show</h2>\n<ul>\n'
        + "\n".join(f"<li>{_e(c)}</li>" for c in caveats(report)) + "\n</ul>\n</aside>",
        threshold_note,
    ]
    body += [metric_section(report, name, figs) for name in metric_order(report)]
    body.append(det_section(report, figs))
    body.append(rerun_section(report))
    body.append(f'<footer>Made by faceaudit {_e(report["faceaudit_version"])} from report.json '
                f'(schema version {SCHEMA_VERSION}). The same tables, without plots: '
                f'<a href="{_e(markdown_name)}">{_e(markdown_name)}</a>.</footer>')
    page_title = f"{title(report)} — {report['target']['name']} on {report['dataset']['name']}"
    return PAGE.substitute(version=_e(report["faceaudit_version"]), title=_e(page_title), css=CSS,
                           body="\n".join(b for b in body if b))
