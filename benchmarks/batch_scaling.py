"""What one more core buys batch work: the audit's extraction on 1 and on 2 Dask workers, same images, one run.

``faceaudit batch extract``'s code (faceaudit.batch.extract_images: detection,
embedding and attributes on the workers, DetectFaces responses built here) over
the first ``--images`` LFW photos of faces-dev, into an in-memory cache. Two local
Dask clusters, of 1 and of 2 single-threaded workers, are started once and kept
up side by side (an idle worker costs nothing measurable); every worker loads its
models before any clock starts. Then ``--rounds`` rounds, each one run on each
cluster, in A-B-B-A order (round 1: 1 then 2 workers; round 2: 2 then 1; ...), so a
change in the machine's load falls on both alike and each round gives a paired
ratio (1-worker seconds / 2-worker seconds).

Reported: seconds and images per second per run; the ratio per round, their
geometric mean with a 95% t-interval over rounds (on the log ratios) and their
median; the cores the workers actually got (their CPU seconds / wall seconds,
read from each worker process); the command's own CPU share, and from it the
ceiling that Amdahl's law puts on the second core; the load average before and
after every run.

Writes benchmarks/results/batch_scaling.json.

    nice -n 10 .venv/bin/python benchmarks/batch_scaling.py [--images 128] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import math
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


def _process_cpu() -> float:
    """CPU seconds of the worker process this runs in (all its threads)."""
    return time.process_time()


def worker_cpu(cluster: FaceCluster) -> float:
    return sum(cluster.client.run(_process_cpu).values())


def start_cluster(workers: int, environment) -> tuple[FaceCluster, float]:
    started = time.perf_counter()
    cluster = FaceCluster(workers=workers)
    # Every worker loads its models before any clock starts: one tiny task each, pinned.
    names = list(cluster.client.scheduler_info(n_workers=-1)["workers"])
    cluster.client.gather([cluster.client.submit(compute_faces, [], environment, embeddings=True,
                                                 attributes=True, workers=[name], pure=False)
                           for name in names])
    return cluster, time.perf_counter() - started


def one_run(cluster: FaceCluster, workers: int, sources) -> dict:
    load_before = os.getloadavg()[0]
    cpu_before, own_before = worker_cpu(cluster), time.process_time()
    clock = time.perf_counter()
    summary = extract_images(ResponseCache(None), sources, cluster, progress=False)
    seconds = time.perf_counter() - clock
    own = time.process_time() - own_before
    workers_cpu = worker_cpu(cluster) - cpu_before
    return {"workers": workers, "seconds": round(seconds, 3), "images": summary.processed,
            "faces": summary.faces, "failed": len(summary.failed),
            "images_per_s": round(summary.processed / seconds, 3),
            "worker_cpu_s": round(workers_cpu, 3), "cores_used": round(workers_cpu / seconds, 3),
            "command_cpu_s": round(own, 3),
            "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2)}


def geometric_interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of the ratios and a 95% t-interval over them (computed on their logs)."""
    from scipy import stats

    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    root = faces_dev_root()
    sources = list_sources(root / "images" / "lfw")[: args.images]
    environment = Settings.from_env().worker_environment()
    load_start = os.getloadavg()
    clusters: dict[int, FaceCluster] = {}
    startup = {}
    try:
        for workers in (1, 2):
            clusters[workers], startup[workers] = start_cluster(workers, environment)
        # Warm-up pass on each (file cache, first-call costs); not counted.
        for workers in (1, 2):
            one_run(clusters[workers], workers, sources[: 16 * workers])
        runs = []
        for round_index in range(args.rounds):
            for workers in ((1, 2) if round_index % 2 == 0 else (2, 1)):
                run = one_run(clusters[workers], workers, sources)
                run["round"] = round_index + 1
                runs.append(run)
                print(json.dumps(run), flush=True)
    finally:
        for cluster in clusters.values():
            cluster.close()
    load_end = os.getloadavg()

    by = {w: {r["round"]: r for r in runs if r["workers"] == w} for w in (1, 2)}
    paired = [by[1][i]["seconds"] / by[2][i]["seconds"] for i in sorted(by[1])]
    geo, low, high = geometric_interval(paired)
    # Amdahl: the share of all CPU spent in the command's own process (not spread over workers).
    one_runs = list(by[1].values())
    serial = statistics.median(r["command_cpu_s"] / (r["command_cpu_s"] + r["worker_cpu_s"]) for r in one_runs)
    ceiling = 1.0 / (serial + (1.0 - serial) / 2.0)
    result = {
        "images": len(sources), "rounds": args.rounds, "order": "A-B-B-A (round 1: 1 then 2 workers)",
        "faces": runs[0]["faces"],
        "cluster_start_and_models_s": {str(w): round(s, 2) for w, s in startup.items()},
        "runs": runs,
        "median_seconds": {str(w): statistics.median(r["seconds"] for r in by[w].values()) for w in (1, 2)},
        "speedup_per_round": [round(p, 3) for p in paired],
        "speedup_geometric_mean": round(geo, 3), "speedup_ci95": [round(low, 3), round(high, 3)],
        "speedup_median_of_rounds": round(statistics.median(paired), 3),
        "cores_used_median": {str(w): statistics.median(r["cores_used"] for r in by[w].values()) for w in (1, 2)},
        "worker_cpu_ms_per_image_median": {
            str(w): round(1000 * statistics.median(r["worker_cpu_s"] for r in by[w].values()) / len(sources), 1)
            for w in (1, 2)},
        "command_cpu_share": round(serial, 4), "amdahl_ceiling_2_cores": round(ceiling, 3),
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start], "load_average_end": [round(x, 2) for x in load_end],
        "load_1min_range_during": [min(r["load_1min_before"] for r in runs), max(r["load_1min_after"] for r in runs)],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nice": os.nice(0),
    }
    print(f"{len(sources)} images, {args.rounds} rounds: 2 workers / 1 worker speed-up {geo:.2f}x "
          f"[{low:.2f}, {high:.2f}] (geometric mean, 95% t-interval), median {result['speedup_median_of_rounds']}x; "
          f"per round {result['speedup_per_round']}; cores got {result['cores_used_median']}; "
          f"Amdahl ceiling {ceiling:.2f}x; load {load_start[0]:.1f} -> {load_end[0]:.1f} on {os.cpu_count()} cores")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
