"""An engine's accuracy on faces-dev, by group, with 95% intervals (default: the default engine).

Measures, on research data (UTKFace and LFW subsets; not real-world conditions):
- detection recall per gender x race cell; for the dlib engine (MTCNN) next to dlib's
  HOG detector on the same images: the measurement its detector was chosen by;
- gender accuracy per cell (a missed face counts as an error) and age error;
- CompareFaces at thresholds 80/95/99 on every LFW pair, and on the check half
  the calibration never saw;
- within-group impostor false match rates per cell at 80/95/99 on the UTKFace
  check half (bootstrap intervals over images).

    .venv/bin/python benchmarks/faces_dev_accuracy.py [--engine dlib|sface] [--data DIR] [--out benchmarks/results]

Writes faces_dev_accuracy.json and faces_dev_accuracy.md in --out for the dlib engine
(for any other engine: faces_dev_accuracy_<engine>.*), and the per-group false match table the
package ships: src/faceaudit/data/group_false_match_rates.json (dlib) or
group_false_match_rates_<engine>.json (faceaudit.similarity.GroupFalseMatchRates
picks a table by the model_version it records).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from rich.progress import track

from faceaudit.datasets import faces_dev
from faceaudit.engine.base import FaceEngine
from faceaudit.engine.batch import analyze_files
from faceaudit.engine.cache import CachingEngine
from faceaudit.rekognition import compare_faces
from faceaudit.runtime import ENGINES, engine_named
from faceaudit.settings import DEFAULT_ENGINE
from faceaudit.stats import pairwise_rate, wilson

THRESHOLDS = (80, 95, 99)
# The first engine's files keep the names they had before there were two; every other engine's carry its name.
UNSUFFIXED_ENGINE = "dlib"


def _hog_count(path: str) -> int:
    import dlib

    from faceaudit.images import load_image
    global _hog
    if "_hog" not in globals():
        _hog = dlib.get_frontal_face_detector()
    return len(_hog(load_image(path).pixels, 1))  # upsample once, as face_recognition does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default=DEFAULT_ENGINE, choices=sorted(ENGINES))
    parser.add_argument("--data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    make_engine = partial(engine_named, args.engine)  # picklable, for the worker processes
    engine = make_engine()
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found; pass --data")
    started = time.time()
    labels = faces_dev.read_labels(root)
    halves = faces_dev.split_halves(labels)
    paths = [str(root / label.path) for label in labels]
    results = dict(zip((l.path for l in labels), analyze_files(paths, engine_factory=make_engine,
                                                               description=f"{args.engine} on faces-dev")))
    hog: dict[str, int] | None = None
    if args.engine == "dlib":  # HOG is the detector MTCNN was chosen over; other engines skip it
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            hog = dict(zip((l.path for l in labels),
                           track(pool.map(_hog_count, paths, chunksize=16), total=len(paths),
                                 description="dlib HOG on faces-dev", transient=True)))

    cells = defaultdict(list)
    for label in labels:
        if label.identity is None:
            cells[f"{label.gender} {label.race}"].append(label)
    per_cell = {}
    scale = engine.similarity_scale
    for cell, members in sorted(cells.items()):
        found = [results[l.path] for l in members]
        check = np.array([r.embedding for l, r in zip(members, found)
                          if r.detected and halves[l.path] == faces_dev.CHECK], dtype=np.float64)
        distances = np.linalg.norm(check[:, None] - check[None], axis=-1)
        ages = [abs(r.age - l.age) for l, r in zip(members, found) if r.detected]
        per_cell[cell] = {
            "images": len(members),
            "detection_recall": wilson(sum(r.detected for r in found), len(members)).as_dict(),
            "gender_accuracy": wilson(sum(r.gender == l.gender.capitalize() for l, r in zip(members, found)),
                                      len(members)).as_dict(),
            "age_mean_absolute_error": float(np.mean(ages)),
            "impostor_fmr_check_half": {str(t): pairwise_rate(distances, scale.distance(t)).as_dict()
                                        for t in THRESHOLDS},
        }
        if hog is not None:
            per_cell[cell]["hog_detection_recall"] = wilson(sum(hog[l.path] > 0 for l in members),
                                                            len(members)).as_dict()

    people = [l for l in labels if l.identity]
    lfw_gender = wilson(sum(results[l.path].gender == l.gender.capitalize() for l in people), len(people))
    cached = CachingEngine(engine)
    pairs = faces_dev.read_pairs(root)
    best_similarity = []
    for pair in track(pairs, description="CompareFaces on LFW pairs", transient=True):
        response = compare_faces(cached, root / pair.path_a, root / pair.path_b, similarity_threshold=0)
        best_similarity.append(max((m["Similarity"] for m in response["FaceMatches"]), default=0.0))
    best_similarity = np.array(best_similarity)
    same = np.array([p.same for p in pairs])
    in_check = np.array([halves[p.path_a] == halves[p.path_b] == faces_dev.CHECK for p in pairs])
    lfw = {}
    for name, mask in (("all pairs", np.ones_like(same)), ("check half", in_check)):
        lfw[name] = {}
        for t in THRESHOLDS:
            matched = best_similarity[mask] >= t
            truth = same[mask]
            lfw[name][str(t)] = {
                "accuracy": wilson(int((matched == truth).sum()), int(mask.sum())).as_dict(),
                "false_non_match_rate": wilson(int((~matched & truth).sum()), int(truth.sum())).as_dict(),
                "false_match_rate": wilson(int((matched & ~truth).sum()), int((~truth).sum())).as_dict(),
            }

    report = {
        "engine": args.engine, "model_version": engine.model_version,
        "data": str(root), "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "anchors": scale.anchors, "per_cell": per_cell, "lfw_gender_accuracy": lfw_gender.as_dict(),
        "lfw_compare_faces": lfw,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "faces_dev_accuracy" if args.engine == UNSUFFIXED_ENGINE else f"faces_dev_accuracy_{args.engine}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_group_fmr_data(report, engine, group_fmr_path(args.engine))
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "faceaudit" / "data"


def group_fmr_path(engine_name: str) -> Path:
    """Where an engine's table ships (the dlib engine's keeps the name it always had)."""
    if engine_name == UNSUFFIXED_ENGINE:
        return DATA_DIR / "group_false_match_rates.json"
    return DATA_DIR / f"group_false_match_rates_{engine_name}.json"


def write_group_fmr_data(report: dict, engine: FaceEngine, path: Path) -> None:
    """Ship the per-group false match rates at 80/95/99 with the package (faceaudit.similarity reads them)."""
    data = {
        "model_version": engine.model_version,
        "thresholds": {str(t): {cell: row["impostor_fmr_check_half"][str(t)]
                                for cell, row in report["per_cell"].items()}
                       for t in THRESHOLDS},
        "provenance": {
            "engine": report["engine"],
            "script": f"benchmarks/faces_dev_accuracy.py --engine {report['engine']}",
            "data": "faces-dev UTKFace check half (about 100 images per gender x race cell, never used for "
                    "calibration); impostor pairs within each cell, each image treated as its own identity",
            "interval": "95%, bootstrap over images widened to Wilson's interval",
            "caution": "research photos (UTKFace), not real-world conditions",
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def _pct(rate: dict) -> str:
    return f"{rate['rate']:.1%} [{rate['ci95'][0]:.1%}, {rate['ci95'][1]:.1%}]"


def _fmr(rate: dict) -> str:
    return f"{rate['rate']:.2%} [{rate['ci95'][0]:.2%}, {rate['ci95'][1]:.2%}]"


def markdown(report: dict) -> str:
    engine = report.get("engine", "dlib")
    hog = all("hog_detection_recall" in row for row in report["per_cell"].values())
    recall = "MTCNN recall (default) | dlib HOG recall" if hog else f"{engine} engine recall"
    lines = [f"# The {engine} engine (model_version {report.get('model_version')}) on faces-dev", "",
             "## Detection recall and gender accuracy per UTKFace cell (200 images each, 95% Wilson intervals)",
             "", f"| cell | {recall} | gender accuracy | age MAE (years) |",
             "|---|---|---|---|" + ("---|" if hog else "")]
    for cell, row in report["per_cell"].items():
        found = _pct(row["detection_recall"]) + (f" | {_pct(row['hog_detection_recall'])}" if hog else "")
        lines.append(f"| {cell} | {found} | "
                     f"{_pct(row['gender_accuracy'])} | {row['age_mean_absolute_error']:.1f} |")
    lines += ["", f"Gender accuracy on 808 LFW photos: {_pct(report['lfw_gender_accuracy'])}.", "",
              "## Within-group impostor false match rate, UTKFace check half (about 100 images, 4,950 pairs "
              "per cell; 95% bootstrap intervals over images)", "",
              "| cell | pairs | FMR at 80 | FMR at 95 | FMR at 99 |", "|---|---|---|---|---|"]
    for cell, row in report["per_cell"].items():
        fmr = row["impostor_fmr_check_half"]
        lines.append(f"| {cell} | {fmr['80']['n']} | {_fmr(fmr['80'])} | {_fmr(fmr['95'])} | {_fmr(fmr['99'])} |")
    lines += ["", "## CompareFaces on LFW pairs (95% Wilson intervals)", "",
              "| pairs | threshold | accuracy | false non-match rate | false match rate |", "|---|---|---|---|---|"]
    for name, rows in report["lfw_compare_faces"].items():
        for t, row in rows.items():
            lines.append(f"| {name} ({row['accuracy']['n']}) | {t} | {_pct(row['accuracy'])} | "
                         f"{_pct(row['false_non_match_rate'])} | {_fmr(row['false_match_rate'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
