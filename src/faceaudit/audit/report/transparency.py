"""The transparency report's pages: transparency.json, transparency.md and transparency.html.

The figures come from faceaudit.accountability.transparency (the same function for a live data
directory and for an export); this module only draws them: tables in Markdown and HTML, bar
charts as inline SVG (plots.bar_plot), HTML through the autoescaping Jinja2 environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faceaudit import __version__

from . import plots
from .render import write_text
from .templating import Figures, render, svg_markup

__all__ = ["BREAKDOWNS", "render_transparency_html", "render_transparency_markdown", "transparency_context",
           "write_transparency"]

# (key in report["searches"], heading)
BREAKDOWNS = (("by_collection", "Collection"), ("by_policy", "Use policy"), ("by_purpose", "Stated purpose"),
              ("by_unit", "Unit"), ("by_key", "Key (role)"), ("by_threshold", "Match threshold"))
REJECTION_NOTE = ("Each rejection is a reviewer deciding that a candidate the machine returned is not the person "
                  "searched for: the share of candidates rejected is a false match rate measured on this "
                  "service's real searches, not on a benchmark.")


def _rate(rate: dict[str, Any]) -> str:
    if not rate.get("n"):
        return "no reviewer decisions in this period"
    low, high = rate["ci95"]
    return f"{rate['rate']:.1%} (95% interval {low:.1%} to {high:.1%}; {rate['k']} of {rate['n']}, Wilson)"


def _signer(report: dict[str, Any]) -> str:
    return report["source"].get("public_key") or "(unknown: the signing key is missing)"


def _verification_line(report: dict[str, Any]) -> str:
    v = report["source"]["verification"]
    if v["ok"]:
        return (f"The log verified: {v['records']} records chained without a break up to record {v['head_seq']}, "
                f"{v['checkpoints_checked']} signed checkpoints checked.")
    return (f"WARNING: the log did NOT verify ({v['problem']['message']}). The figures below may not be the "
            "ones the server wrote.")


def _summary(report: dict[str, Any]) -> list[str]:
    s, c, r, ref = report["searches"], report["candidates"], report["reviews"], report["refusals"]
    return [
        f"{s['total']} searches ({s['answered']} answered, {s['refused']} refused); "
        f"{c['returned']} candidates returned, {c['searches_with_none']} answered searches returned none.",
        f"{s['held_for_review']} searches held for human review; reviewers confirmed {r['confirmed']}, rejected "
        f"{r['rejected']} and found {r['inconclusive']} inconclusive of the machine's candidates.",
        f"Share of candidates reviewers rejected: {_rate(r['rejection_rate'])}.",
        f"{ref['total']} signed requests refused; {ref['unauthenticated']['total']} requests refused before their "
        "signature could be verified (counted, not attributed to anyone).",
        f"{len(report['moratoriums'])} moratorium periods in force during the period.",
    ]


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "_None in this period._\n"
    escape = [str(h).replace("|", "\\|") for h in headers]
    lines = ["| " + " | ".join(escape) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _breakdown_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r["value"], r["searches"], r["answered"], r["refused"], r["candidates"]] for r in rows]


BREAKDOWN_HEADERS = ["", "Searches", "Answered", "Refused", "Candidates returned"]


def render_transparency_markdown(report: dict[str, Any]) -> str:
    period = report["period"]
    out = [f"# Transparency report: searches since {period['since']}\n",
           f"Log `{report['source']['log_id']}`, signed by key `{_signer(report)}`, head "
           f"`{report['source']['verification']['head_hash']}`; "
           f"{report['source']['records_in_period']} of {report['source']['records']} records in the period.\n",
           _verification_line(report) + "\n", "## In short\n"]
    out += [f"- {line}" for line in _summary(report)]
    out.append("")
    for key, heading in BREAKDOWNS:
        out.append(f"## Searches by {heading.lower()}\n")
        out.append(_md_table([heading, *BREAKDOWN_HEADERS[1:]], _breakdown_rows(report["searches"][key])))
    out.append("## Candidates per answered search\n")
    out.append(_md_table(["Candidates", "Searches"],
                         [[r["candidates"], r["searches"]] for r in report["candidates"]["per_search"]]))
    reviews = report["reviews"]
    out.append("## Review outcomes\n")
    out.append(f"{reviews['items']} review items; decisions: confirmed {reviews['confirmed']}, rejected "
               f"{reviews['rejected']}, inconclusive {reviews['inconclusive']}.\n")
    out.append(f"Rejected by reviewers: {_rate(reviews['rejection_rate'])}. {REJECTION_NOTE}\n")
    out.append(_md_table(["Reason for rejecting", "Count"],
                         [[r["reason"], r["count"]] for r in reviews["rejection_reasons"]]))
    refusals = report["refusals"]
    out.append("## Refusals\n")
    out.append(_md_table(["Error", "Count"], [[r["value"], r["count"]] for r in refusals["by_error"]]))
    out.append(_md_table(["Reason", "Count"], [[r["value"], r["count"]] for r in refusals["by_reason"]]))
    out.append(f"Refused before the signature was verified: {refusals['unauthenticated']['total']} "
               + ", ".join(f"{k} {v}" for k, v in refusals["unauthenticated"]["by_error"].items()) + "\n")
    out.append("## Moratorium periods\n")
    out.append(_md_table(["Scope", "Target", "From", "Until", "Reason", "Set by"],
                         [[m["scope"], m["target"], m["set"] or "(before the log)", m["lifted"] or "still in force",
                           m["reason"] or "", m["by"] or ""] for m in report["moratoriums"]]))
    out.append(f"\nfaceaudit {__version__} · computed from the search log alone; "
               "`faceaudit transparency --from-export FILE` gives the same figures from an export.\n")
    return "\n".join(out)


def _bars(rows: list[dict[str, Any]], heading: str, figures: Figures) -> Any:
    if not rows:
        return None
    svg = plots.bar_plot(rows=[(str(r["value"]), [r["answered"], r["refused"]]) for r in rows],
                         series=["answered", "refused"], xlabel="searches",
                         title=f"Searches by {heading.lower()}",
                         desc="; ".join(f"{r['value']}: {r['answered']} answered, {r['refused']} refused"
                                        for r in rows), fig_id=figures.next_id())
    return svg_markup(svg)


def render_transparency_html(report: dict[str, Any]) -> str:
    return render("transparency.html.j2", **transparency_context(report))


def transparency_context(report: dict[str, Any]) -> dict[str, Any]:
    """What transparency.html.j2 prints for a report (the web console renders it in its own frame)."""
    figures = Figures("tr")
    sections = []
    for key, heading in BREAKDOWNS:
        rows = report["searches"][key]
        sections.append({"id": key, "heading": heading, "svg": _bars(rows, heading, figures),
                         "headers": [heading, *BREAKDOWN_HEADERS[1:]], "rows": _breakdown_rows(rows)})
    refusal_rows = report["refusals"]["by_reason"]
    refusal_svg = None
    if refusal_rows:
        refusal_svg = svg_markup(plots.bar_plot(
            rows=[(str(r["value"])[:80], [r["count"]]) for r in refusal_rows], series=["refused"],
            xlabel="requests", title="Refusals by reason",
            desc="; ".join(f"{r['value']}: {r['count']}" for r in refusal_rows), fig_id=figures.next_id()))
    return {"version": __version__, "page_title": f"Transparency report since {report['period']['since']}",
            "report": report, "signer": _signer(report), "verification": _verification_line(report),
            "summary": _summary(report),
            "sections": sections, "rejection": _rate(report["reviews"]["rejection_rate"]),
            "rejection_note": REJECTION_NOTE, "refusal_svg": refusal_svg}


def write_transparency(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """transparency.json, transparency.md and transparency.html in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "transparency.json", "md": out / "transparency.md", "html": out / "transparency.html"}
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    stored = json.loads(text)  # the pages show exactly what the JSON holds
    write_text(paths["json"], text)
    write_text(paths["md"], render_transparency_markdown(stored))
    write_text(paths["html"], render_transparency_html(stored))
    return paths
