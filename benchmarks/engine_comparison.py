"""The two engines side by side on faces-dev's CHECK half (never used to calibrate either), with 95% intervals.

For each engine (SFaceEngine ``sface``, the default, then DlibEngine ``dlib``), at its own
calibrated similarity anchors:
- LFW pairs of the check half: genuine match rate and impostor false match rate at 80
  (Wilson intervals; each pair is one trial), and their balanced accuracy;
- UTKFace within-group impostor false match rates per gender x race cell at 80 and 95
  (faceaudit.stats.pairwise_rate: bootstrap over images, as pairs share images);
- detection: images with a face found, per source.

Research data (UTKFace, LFW), not real-world conditions. Run:

    .venv/bin/python benchmarks/engine_comparison.py [--data DIR] [--out benchmarks/results]

Writes engine_comparison.json and engine_comparison.md in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.datasets import faces_dev
from faceaudit.engine.batch import analyze_files
from faceaudit.runtime import ENGINES, engine_named
from faceaudit.settings import DEFAULT_ENGINE
from faceaudit.stats import pairwise_rate, wilson
from faceaudit.vectors import pairwise_distances

# The default engine first; each is built by name, as `--engine NAME` builds it.
ENGINE_NAMES = sorted(ENGINES, key=lambda name: name != DEFAULT_ENGINE)


def shown(name: str) -> str:
    return f"{name} (default)" if name == DEFAULT_ENGINE else name


def evaluate(name: str, root: Path, labels, halves, pairs) -> dict:
    engine = engine_named(name)
    scale = engine.similarity_scale
    check = [label for label in labels if halves[label.path] == faces_dev.CHECK]
    results = analyze_files([root / label.path for label in check], engine_factory=partial(engine_named, name),
                            description=f"check half ({name})")
    by_path = {label.path: result for label, result in zip(check, results)}
    out: dict = {"model_version": engine.model_version, "default_engine": name == DEFAULT_ENGINE,
                 "anchors": scale.anchors,
                 "detected": {}, "lfw": {}, "utkface_fmr": {}}
    for source in sorted({label.source for label in check}):
        picked = [by_path[label.path].detected for label in check if label.source == source]
        out["detected"][source] = wilson(sum(picked), len(picked)).as_dict()

    usable = [p for p in pairs if by_path[p.path_a].detected and by_path[p.path_b].detected]
    lfw_vectors = {path: np.asarray(by_path[path].embedding) for p in usable for path in (p.path_a, p.path_b)}
    distance = np.array([float(np.linalg.norm(lfw_vectors[p.path_a] - lfw_vectors[p.path_b])) for p in usable])
    same = np.array([p.same for p in usable])
    for similarity in (80, 95):
        threshold = scale.distance(similarity)
        genuine = wilson(int((distance[same] <= threshold).sum()), int(same.sum()))
        impostor = wilson(int((distance[~same] <= threshold).sum()), int((~same).sum()))
        out["lfw"][str(similarity)] = {"distance": threshold, "genuine_match_rate": genuine.as_dict(),
                                       "impostor_false_match_rate": impostor.as_dict(),
                                       "balanced_accuracy": (genuine.value + 1 - impostor.value) / 2}
    out["lfw"]["pairs_without_a_face"] = len(pairs) - len(usable)

    cells: dict[str, list] = {}
    for label in check:
        if label.identity is None and by_path[label.path].detected:
            cells.setdefault(f"{label.gender} {label.race}", []).append(by_path[label.path].embedding)
    for cell, vectors in sorted(cells.items()):
        matrix = pairwise_distances(np.array(vectors))
        out["utkface_fmr"][cell] = {str(s): pairwise_rate(matrix, scale.distance(s)).as_dict() for s in (80, 95)}
        out["utkface_fmr"][cell]["n_images"] = len(vectors)
    return out


def pct(rate: dict) -> str:
    return f"{rate['rate']:.2%} [{rate['ci95'][0]:.2%}, {rate['ci95'][1]:.2%}]"


def write_markdown(result: dict, path: Path) -> None:
    engines = result["engines"]
    lines = ["# Engines compared on faces-dev's check half", "",
             f"{result['timestamp']}; load average {result['load_average_start'][0]:.1f} at start, "
             f"{result['load_average_end'][0]:.1f} at end ({result['cpus']} cores). "
             "faces-dev's check half only (neither engine's similarity scale was "
             "calibrated on it): UTKFace and LFW research photos, not real-world conditions. Each engine at its "
             "own calibrated anchors. 95% intervals: Wilson for pairs and detections; for UTKFace impostor rates "
             "a bootstrap over images (pairs share images), at least as wide as Wilson's.", "",
             "## LFW pairs", "", "| engine | threshold | distance | genuine pairs matched | impostor pairs matched "
             "| balanced accuracy |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, e in engines.items():
        for s in ("80", "95"):
            r = e["lfw"][s]
            g, i = r["genuine_match_rate"], r["impostor_false_match_rate"]
            lines.append(f"| {shown(name)} | {s} | {r['distance']:.4f} | {pct(g)} (n={g['n']}) | "
                         f"{pct(i)} (n={i['n']}) | {r['balanced_accuracy']:.2%} |")
    lines += ["", "## UTKFace: strangers of the same gender and race matched (within-group false match rate)", "",
              "| cell | " + " | ".join(f"{shown(n)} at {s}" for n in engines for s in ("80", "95")) + " |",
              "| --- | " + " | ".join("---:" for _ in engines for _ in range(2)) + " |"]
    cells = sorted(next(iter(engines.values()))["utkface_fmr"])
    for cell in cells:
        row = [f"{pct(e['utkface_fmr'][cell][s])}" for e in engines.values() for s in ("80", "95")]
        n = next(iter(engines.values()))["utkface_fmr"][cell]["n_images"]
        lines.append(f"| {cell} (n={n} images) | " + " | ".join(row) + " |")
    lines += ["", "## Detection (images with a face found)", "", "| engine | " +
              " | ".join(sorted(next(iter(engines.values()))["detected"])) + " |",
              "| --- | " + " | ".join("---:" for _ in next(iter(engines.values()))["detected"]) + " |"]
    for name, e in engines.items():
        lines.append(f"| {shown(name)} | " + " | ".join(f"{d['k']}/{d['n']}" for _, d in sorted(e["detected"].items()))
                     + " |")
    lines += ["", "Produced by `benchmarks/engine_comparison.py`. Raw figures: engine_comparison.json.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    root = faces_dev.locate(args.data)
    if root is None:
        raise SystemExit("faces-dev not found; pass --data")
    started = time.time()
    load_start = os.getloadavg()
    labels = faces_dev.read_labels(root)
    halves = faces_dev.split_halves(labels)
    pairs = faces_dev.pairs_in_half(faces_dev.read_pairs(root), halves, faces_dev.CHECK)
    result: dict[str, Any] = {"benchmark": "engine_comparison",
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
              "default_engine": DEFAULT_ENGINE,
              "engines": {name: evaluate(name, root, labels, halves, pairs) for name in ENGINE_NAMES}}
    result["seconds"] = time.time() - started
    result["cpus"] = os.cpu_count()
    result["load_average_start"] = [round(x, 2) for x in load_start]
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out / "engine_comparison.md")
    print((out / "engine_comparison.md").read_text())


if __name__ == "__main__":
    main()
