"""What one more core buys batch work: the audit's extraction on 1 and on 2 Dask workers, same images, one run.

``faceaudit batch extract``'s code (faceaudit.batch.extract_images: detection,
embedding and attributes on the workers, DetectFaces responses built here) over
the first ``--images`` LFW photos of faces-dev, into an in-memory cache, on a
local Dask cluster of 1 and of 2 workers, alternated (1, 2, 1, 2, ...) so that a
change in the machine's load falls on both. Each cluster's start and model loading
are timed apart from the work (every worker loads its models before the clock
starts). Reports seconds per run, images per second and the ratio of medians.

Writes benchmarks/results/batch_scaling.json.

    nice -n 10 .venv/bin/python benchmarks/batch_scaling.py [--images 120] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from faceaudit.audit.targets.cache import ResponseCache
from faceaudit.batch import extract_images, list_sources
from faceaudit.datasets import faces_dev
from faceaudit.engine.distributed import FaceCluster, compute_faces
from faceaudit.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "batch_scaling.json"


def faces_dev_root() -> Path:
    root = faces_dev.locate()
    if root is None:
        raise SystemExit("faces-dev not found (FACEAUDIT_TEST_DATA or ../shared/data/faces-dev)")
    return root


def one_run(workers: int, sources, environment) -> dict:
    started = time.perf_counter()
    with FaceCluster(workers=workers) as cluster:
        # Every worker loads its models before the clock starts: one tiny task each, pinned.
        names = list(cluster.client.scheduler_info(n_workers=-1)["workers"])
        cluster.client.gather([cluster.client.submit(compute_faces, [], environment, embeddings=True,
                                                     attributes=True, workers=[name], pure=False)
                               for name in names])
        ready = time.perf_counter() - started
        clock = time.perf_counter()
        summary = extract_images(ResponseCache(None), sources, cluster, progress=False)
        seconds = time.perf_counter() - clock
    return {"workers": workers, "start_and_models_s": round(ready, 2), "seconds": round(seconds, 2),
            "images": summary.processed, "faces": summary.faces,
            "images_per_s": round(summary.processed / seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = faces_dev_root()
    sources = list_sources(root / "images" / "lfw")[: args.images]
    environment = Settings.from_env().worker_environment()
    runs = []
    for _ in range(args.rounds):
        for workers in (1, 2):
            runs.append(one_run(workers, sources, environment))
            print(json.dumps(runs[-1]), flush=True)
    one = statistics.median(r["seconds"] for r in runs if r["workers"] == 1)
    two = statistics.median(r["seconds"] for r in runs if r["workers"] == 2)
    # Each round's 1-worker time over its 2-worker time: paired, so a load change between rounds cancels.
    paired = [round(runs[i]["seconds"] / runs[i + 1]["seconds"], 2) for i in range(0, len(runs), 2)]
    load = os.getloadavg()
    result = {"images": len(sources), "rounds": args.rounds, "runs": runs,
              "median_seconds": {"1": one, "2": two}, "speedup_2_over_1": round(one / two, 2),
              "speedup_per_round": paired, "speedup_median_of_rounds": statistics.median(paired),
              "cores": os.cpu_count(), "load_average_after": [round(x, 1) for x in load],
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"{len(sources)} images: 1 worker {one:.1f} s, 2 workers {two:.1f} s (median of {args.rounds}): "
          f"{result['speedup_2_over_1']}x; per round {paired}; load average {load[0]:.1f} on {os.cpu_count()} cores")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
