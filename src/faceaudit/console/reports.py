"""The audit reports a console lists: each folder directly under ``faceaudit serve --reports DIR``
that holds a report.json (what ``faceaudit audit ... --out DIR/NAME`` writes).

A report is named by its folder's name; the console opens only names found by listing the
folder again, so no request can make it read a path outside DIR. Reports are read and
validated (faceaudit.audit.report.load_report) when opened; a report that fails is listed
with its problem rather than hidden.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceaudit.audit.report import ReportError, build_comparison, load_report

REPORT_FILE = "report.json"
MAX_REPORT_BYTES = 32 * 1024 * 1024  # a report.json larger than this is listed, not opened
MAX_LISTED = 500


@dataclass(frozen=True)
class ListedReport:
    name: str
    path: Path
    protocol: str | None = None
    target: str | None = None
    dataset: str | None = None
    created: str | None = None
    problem: str | None = None


class ReportFolder:
    """The reports under one folder (None: the console was started without ``--reports``)."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).resolve() if root is not None else None

    def list(self) -> list[ListedReport]:
        if self.root is None or not self.root.is_dir():
            return []
        found: list[ListedReport] = []
        for folder in sorted(self.root.iterdir(), key=lambda p: p.name):
            path = folder / REPORT_FILE
            if not folder.is_dir() or not path.is_file():
                continue
            found.append(_summary(folder.name, path))
            if len(found) >= MAX_LISTED:
                break
        return found

    def find(self, name: str) -> ListedReport | None:
        return next((r for r in self.list() if r.name == name), None)

    def open(self, name: str) -> dict[str, Any]:
        """The validated report called ``name``; KeyError if there is none, ReportError if it is invalid."""
        listed = self.find(name)
        if listed is None:
            raise KeyError(name)
        if listed.path.stat().st_size > MAX_REPORT_BYTES:
            raise ReportError([f"larger than {MAX_REPORT_BYTES // 2**20} MiB; open it with a text editor"],
                              listed.name)
        return load_report(listed.path)

    def compare(self, first: str, second: str) -> dict[str, Any]:
        """Two reports side by side (faceaudit.audit.report.build_comparison), labelled by their names."""
        reports = [self.open(first), self.open(second)]
        return build_comparison(reports, labels=[first, second], sources=[first, second])


def _summary(name: str, path: Path) -> ListedReport:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            return ListedReport(name, path, problem="too large to list")
        data = json.loads(path.read_text(encoding="utf-8"))
        target, dataset = data.get("target") or {}, data.get("dataset") or {}
        return ListedReport(name, path, str(data.get("protocol", "")), str(target.get("name", "")),
                            str(dataset.get("name", "")), str(data.get("created", ""))[:19].replace("T", " "))
    except (OSError, ValueError, AttributeError) as error:
        return ListedReport(name, path, problem=f"cannot be read: {type(error).__name__}")
