"""write_report: report.json (validated), report.md and report.html in one folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .html import render_html
from .markdown import render_markdown
from .schema import dumps, validate_report


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: dict, out_dir) -> dict[str, Path]:
    """Validate ``report`` (schema version 1) and write report.json, report.md and report.html.

    Raises ReportError, listing every problem, before writing anything if the report does
    not follow docs/audit-report-schema.md. Returns {"json": ..., "md": ..., "html": ...}.
    The pages are rendered from the JSON as written, so they show exactly what it holds.
    """
    validate_report(report)
    text = dumps(report)
    stored = json.loads(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    html_text = render_html(stored, markdown_name=paths["md"].name)
    md_text = render_markdown(stored, html_name=paths["html"].name)
    write_text(paths["json"], text)
    write_text(paths["md"], md_text)
    write_text(paths["html"], html_text)
    return paths
