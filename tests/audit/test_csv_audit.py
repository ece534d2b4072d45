"""A whole audit, as a user runs it, of a system known only by its exported predictions.

The CSV's predictions are made up so that every rate is known; the report must
say exactly those rates, with Wilson intervals as scipy computes them.
"""

from __future__ import annotations

import csv
import json
import subprocess

import pytest
from PIL import Image
from scipy.stats import binomtest

from support.server import faceaudit_command

CELLS = [("female", "Black"), ("female", "White"), ("male", "Black"), ("male", "White")]
# Per cell: images, of which missed by the detector, of which (detected) given the wrong gender.
PLAN = {("female", "Black"): (40, 4, 8), ("female", "White"): (40, 0, 1),
        ("male", "Black"): (40, 2, 3), ("male", "White"): (40, 0, 0)}


def wilson(k: int, n: int) -> list[float]:
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [interval.low, interval.high]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    labels, predictions = [], []
    for (gender, race), (n, missed, wrong) in PLAN.items():
        for i in range(n):
            name = f"{gender}_{race}_{i:02d}.png"
            Image.new("RGB", (100, 100), (i, 50, 50)).save(root / name)  # pixels are never looked at
            labels.append({"path": name, "gender": gender, "race": race, "age": 30 + i % 20})
            if i < missed:
                predictions.append({"path": name, "face_detected": "0"})
                continue
            said = gender if i >= missed + wrong else ("male" if gender == "female" else "female")
            predictions.append({"path": name, "face_detected": "1", "gender": said, "gender_confidence": "90",
                                "age": str(30 + i % 20 + (5 if race == "Black" else 1))})
    for name, rows, columns in (("labels.csv", labels, ["path", "gender", "race", "age"]),
                                ("predictions.csv", predictions,
                                 ["path", "face_detected", "gender", "gender_confidence", "age"])):
        with open(root / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    out = root / "report"
    result = subprocess.run([*faceaudit_command(), "audit", "attributes", "--data", str(root),
                             "--labels", str(root / "labels.csv"), "--target", f"csv:{root / 'predictions.csv'}",
                             "--out", str(out), "--min-cell", "10"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "report.json").read_text()), out


def rows(report, metric):
    return {tuple(sorted(r["group"].items())): r for r in report["metrics"] if r["metric"] == metric}


def test_every_cell_rate_and_interval(audited):
    report, _ = audited
    failures, errors = rows(report, "detection_failure_rate"), rows(report, "gender_error_rate")
    for (gender, race), (n, missed, wrong) in PLAN.items():
        key = (("gender", gender), ("race", race))
        assert (failures[key]["k"], failures[key]["n"]) == (missed, n)
        assert failures[key]["ci95"] == pytest.approx(wilson(missed, n), abs=1e-9)
        # A face the system missed is a gender error too: never dropped from the count.
        assert (errors[key]["k"], errors[key]["n"]) == (missed + wrong, n)
        assert errors[key]["value"] == pytest.approx((missed + wrong) / n)
        assert errors[key]["ci95"] == pytest.approx(wilson(missed + wrong, n), abs=1e-9)


def test_marginal_and_overall_rows(audited):
    report, _ = audited
    errors = rows(report, "gender_error_rate")
    total_errors = sum(missed + wrong for _, missed, wrong in PLAN.values())
    assert (errors[()]["k"], errors[()]["n"]) == (total_errors, 160)
    black = sum(m + w for (g, r), (_, m, w) in PLAN.items() if r == "Black")
    assert (errors[(("race", "Black"),)]["k"], errors[(("race", "Black"),)]["n"]) == (black, 80)
    assert errors[(("race", "Black"),)]["ci95"] == pytest.approx(wilson(black, 80), abs=1e-9)


def test_age_error_and_the_largest_gap(audited):
    report, out = audited
    ages = rows(report, "age_mean_absolute_error")
    assert ages[(("gender", "male"), ("race", "White"))]["value"] == pytest.approx(1.0)
    assert ages[(("gender", "female"), ("race", "Black"))]["value"] == pytest.approx(5.0)
    gap = next(g for g in report["gaps"] if g["metric"] == "gender_error_rate")
    assert gap["highest"]["group"] == {"gender": "female", "race": "Black"}
    assert gap["highest"]["value"] == pytest.approx(12 / 40)
    assert gap["lowest"]["value"] == 0.0
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert report["target"]["kind"] == "csv"
    assert "--target" in report["command"]  # the report says how to rerun it


def test_cli_refuses_a_missing_dataset(tmp_path):
    result = subprocess.run([*faceaudit_command(), "audit", "attributes", "--data", str(tmp_path / "none"),
                             "--target", "local", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "faceaudit audit:" in result.stderr


def test_summary_leads_with_the_largest_gap_the_data_show(audited):
    report, _ = audited
    first = report["summary"][0]
    assert first.startswith("Gender was misclassified for 30") and "Black women" in first
