"""Audit reports: report.json (schema version 1, docs/audit-report-schema.md), report.md, report.html.

    from faceaudit.audit.report import write_report, compare_reports
    paths = write_report(report_dict, "out/")        # {"json", "md", "html"} -> Path
    compare_reports(["a/report.json", "b/"], "cmp/")  # {"json", "md", "html"} -> Path

report.html is one self-contained file (inline CSS and SVG plots, no scripts, no
network) written for readers who are not specialists; report.md holds the same
words and tables. Invalid reports are refused with ReportError listing every problem.
"""

from .compare import build_comparison, compare_reports
from .render import write_report
from .schema import SCHEMA_VERSION, ReportError, load_report, validate_report

__all__ = ["SCHEMA_VERSION", "ReportError", "build_comparison", "compare_reports", "load_report",
           "validate_report", "write_report"]
