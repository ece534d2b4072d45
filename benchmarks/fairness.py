"""Do the mitigations narrow the gaps the audit finds? Measured with the audit itself.

On faces-dev: train on the calibration half, evaluate on the disjoint check half.
- verification, without and with fair score normalization (trained on the
  calibration half's embeddings, no demographic labels used);
- attributes, with the shipped gender network and with a gender head trained on
  the calibration half, balanced across gender x race cells.
Each run is a full audit report; a comparison report puts them side by side.
The trained models stay in benchmarks/results/fairness/models/ only if
--keep-models is given: they were trained on research-only data and must not be
shipped (.gitignore keeps them out of the repository).

    .venv/bin/python benchmarks/fairness.py [--data DIR] [--out benchmarks/results/fairness]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from faceaudit.audit import protocols
from faceaudit.audit.report import compare_reports, write_report
from faceaudit.audit.targets import open_target
from faceaudit.datasets import AuditDataset, faces_dev, load_dataset
from faceaudit.fairness.train import train_attribute_head, train_score_normalization
from faceaudit.settings import GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV

CALIBRATION = {"half": faces_dev.CALIBRATION}


def check_half(dataset: AuditDataset) -> AuditDataset:
    # pairs=None: the verification protocol generates them (every genuine LFW pair; impostors
    # within each gender x race group, UTKFace's included), as NIST forms them.
    images = [image for image in dataset.images if image.group("half") == faces_dev.CHECK]
    return replace(dataset, name=f"{dataset.name} (check half)", images=images, pairs=None,
                   notes=[*dataset.notes, "evaluated on the check half; models trained on the calibration half"])


def audit(protocol, dataset: AuditDataset, env: dict[str, str], out: Path, cache: Path, **options) -> dict:
    """One audit with the local target, the engine configured by ``env`` (worker processes inherit it)."""
    saved = {name: os.environ.pop(name, None) for name in (GENDER_HEAD_ENV, SCORE_NORMALIZATION_ENV)}
    os.environ.update(env)
    try:
        target = open_target("local", cache_dir=str(cache))
        try:
            report = protocol(dataset, target, **options)
        finally:
            target.close()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    report = protocols.finish_report(report, ["python", "benchmarks/fairness.py", *sys.argv[1:]])
    write_report(report, out)
    return report


def rows(report: dict, metric: str, threshold=None) -> list[dict]:
    return [r for r in report["metrics"] if r["metric"] == metric and r.get("threshold") == threshold]


def cells(report: dict, metric: str, threshold=None) -> list[dict]:
    return [r for r in rows(report, metric, threshold) if set(r["group"]) == {"gender", "race"}]


def headline(verification: dict, attributes: dict) -> dict:
    """The numbers the notes quote, with their intervals."""
    out = {}
    gender_errors = cells(attributes, "gender_error_rate")
    worst = max(gender_errors, key=lambda r: r["value"])
    out["worst_group_gender_accuracy"] = {"group": worst["group"], "value": 1 - worst["value"],
                                          "ci95": [1 - worst["ci95"][1], 1 - worst["ci95"][0]], "n": worst["n"]}
    threshold_at_fmr = verification["parameters"].get("threshold_at_target_fmr")
    for t in (80, 95, 99, threshold_at_fmr):
        gap = next((g for g in verification["gaps"] if g["metric"] == "false_match_rate"
                    and g["threshold"] == t), None)
        if gap:
            out[f"fmr_gap_at_{t}"] = {k: gap.get(k) for k in ("highest", "lowest", "ratio", "ratio_ci95",
                                                               "difference", "difference_ci95", "note")}
    overall = [r for r in rows(verification, "false_non_match_rate", threshold_at_fmr) if r["group"] == {}]
    if overall:
        r = overall[0]
        out["tar_at_target_fmr"] = {"target_fmr": verification["parameters"].get("target_fmr"),
                                    "threshold": threshold_at_fmr, "value": 1 - r["value"],
                                    "ci95": [1 - r["ci95"][1], 1 - r["ci95"][0]], "n": r["n"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fairness"))
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--target-fmr", type=float, default=0.01)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "faceaudit" / "fairness"))
    args = parser.parse_args()
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found; pass --data")
    out = Path(args.out)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(root)

    normalization = train_score_normalization(dataset, clusters=args.clusters, target_fmr=args.target_fmr,
                                              where=CALIBRATION)
    normalization.save(models / "score_normalization.json")
    head = train_attribute_head(dataset, where=CALIBRATION)
    head.save(models / "gender_head.json")

    evaluation = check_half(dataset)
    cache = Path(args.cache)
    options = {"group_by": ("gender", "race"), "seed": 0}
    reports = {
        "verification-raw": audit(protocols.run_verification, evaluation, {}, out / "verification-raw",
                                  cache / "raw", target_fmr=0.001, **options),
        "verification-normalized": audit(protocols.run_verification, evaluation,
                                         {SCORE_NORMALIZATION_ENV: str(models / "score_normalization.json")},
                                         out / "verification-normalized", cache / "normalized",
                                         target_fmr=0.001, **options),
        "attributes-shipped": audit(protocols.run_attributes, evaluation, {}, out / "attributes-shipped",
                                    cache / "raw", **options),
        "attributes-trained-head": audit(protocols.run_attributes, evaluation,
                                         {GENDER_HEAD_ENV: str(models / "gender_head.json")},
                                         out / "attributes-trained-head", cache / "head", **options),
    }
    compare_reports([out / "verification-raw", out / "verification-normalized"], out / "compare-verification")
    compare_reports([out / "attributes-shipped", out / "attributes-trained-head"], out / "compare-attributes")
    summary = {
        "without_mitigation": headline(reports["verification-raw"], reports["attributes-shipped"]),
        "with_mitigation": headline(reports["verification-normalized"], reports["attributes-trained-head"]),
        "training": {"score_normalization": normalization.provenance, "gender_head": head.provenance},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
