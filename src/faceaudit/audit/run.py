"""One audit from start to finish: dataset + target + protocol -> report.json, .html, .md.

The command line (`faceaudit audit ...`) and any script call ``run_audit``; it
records the exact command so the report says how to rerun it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceaudit.audit import protocols
from faceaudit.audit.report import write_report
from faceaudit.audit.targets import open_target
from faceaudit.datasets.readers import describe_problems, load_dataset

PROTOCOLS = {
    "attributes": protocols.run_attributes,
    "verification": protocols.run_verification,
    "lineup": protocols.run_lineup,
}


def run_audit(protocol: str, data: str, target: str, out: str, *, labels: str | None = None,
              layout: str = "auto", group_by: Sequence[str] = ("gender", "race"),
              thresholds: Sequence[float] = (80, 95, 99), target_fmr: float = 0.001, seed: int = 0,
              min_cell: int = 30, pairs: str = "dataset", cache_dir: str | None = None,
              workers: int | None = None,
              command: Sequence[str] | None = None, log=print) -> dict[str, Path]:
    """Run ``protocol`` on the dataset at ``data`` against ``target``; write the report to ``out``.

    ``pairs`` (verification): "dataset" uses the dataset's own pairs when it has them;
    "generated" forms them from identities, impostors within each demographic group.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    dataset = load_dataset(data, labels=labels, layout=layout)
    log(describe_problems(dataset))
    if pairs not in ("dataset", "generated"):
        raise ValueError(f"pairs must be 'dataset' or 'generated', got {pairs!r}")
    if pairs == "generated":
        dataset.pairs = None
    options: dict[str, Any] = {"group_by": tuple(group_by), "thresholds": tuple(thresholds), "seed": seed,
                               "min_cell": min_cell}
    if protocol == "verification":
        options["target_fmr"] = target_fmr
    system = open_target(target, cache_dir=cache_dir, workers=workers)
    try:
        report = PROTOCOLS[protocol](dataset, system, **options)
    finally:
        system.close()
    report = protocols.finish_report(report, list(command if command is not None else sys.argv))
    paths = write_report(report, out)
    for sentence in report.get("summary", []):
        log(f"- {sentence}")
    return paths
