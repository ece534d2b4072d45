"""SearchFaces latency and add_faces throughput of the embedded store.

Synthetic data: random 128-D vectors scaled to norms around 1.0 (the scale of
dlib embeddings) - no images, no models. Measures, for 10k and 100k stored faces:

* search latency p50/p95/max (exact search, top 10 and top 100, with metadata),
* the one-off index load (first search after opening) and the refresh costs
  after another writer added one face (append) or deleted one (compaction),
* add_faces throughput: one face per call (the IndexFaces pattern) with
  synchronous=FULL and NORMAL, and 100 faces per call.

Prints a table and writes benchmarks/results/search_latency.json.

    .venv/bin/python benchmarks/search_latency.py [--sizes 10000 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from faceaudit.storage import EmbeddedStore, StoredFace

DIM = 128
RESULTS = Path(__file__).resolve().parent / "results" / "search_latency.json"


def vectors(rng, n):
    v = rng.standard_normal((n, DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v *= rng.uniform(0.9, 1.1, size=(n, 1))
    return v.astype(np.float32)


def faces_for(vs):
    box = {"Width": 0.3, "Height": 0.4, "Left": 0.2, "Top": 0.1}
    return [StoredFace(str(uuid.uuid4()), str(uuid.uuid4()), None, box, 99.9, "bench", None, v)
            for v in vs]


def percentiles(samples_s):
    ms = np.asarray(samples_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "max_ms": round(float(ms.max()), 3),
            "n": len(ms)}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_search(size, queries, rng, workdir):
    data_dir = Path(workdir) / f"search-{size}"
    store = EmbeddedStore(data_dir, synchronous="NORMAL")
    store.create_collection("bench", "bench")
    t0 = time.perf_counter()
    for start in range(0, size, 1000):
        store.add_faces("bench", faces_for(vectors(rng, min(1000, size - start))))
    load_s = time.perf_counter() - t0
    store.close()

    store = EmbeddedStore(data_dir, synchronous="NORMAL")  # cold: index not loaded
    qs = vectors(rng, queries)
    first_s, _ = timed(lambda: store.search("bench", qs[0], 10))
    result = {"faces": size, "bulk_insert_s": round(load_s, 2),
              "index_load_first_search_ms": round(first_s * 1000, 1),
              "index_memory_mb": round(size * (DIM * 4 + 8 + 8 + 8) / 2**20, 1)}
    for k in (10, 100):
        samples = [timed(lambda q=q, k=k: store.search("bench", q, k))[0] for q in qs]
        result[f"search_top{k}"] = percentiles(samples)
    # the same search at the numpy level only (no SQL, no records): the core cost
    view = store._indexes["bench"].index.snapshot()
    core = []
    for q in qs:
        t0 = time.perf_counter()
        d = view.sqnorms - 2.0 * np.einsum("ij,j->i", view.matrix, q)
        np.argpartition(d, 10)[:10]
        core.append(time.perf_counter() - t0)
    result["numpy_einsum_argpartition_top10"] = percentiles(core)

    # another writer (a second store = another connection, as another process would be)
    writer = EmbeddedStore(data_dir, synchronous="NORMAL")
    appends, compactions = [], []
    for i in range(10):
        face = faces_for(vectors(rng, 1))
        writer.add_faces("bench", face)
        appends.append(timed(lambda q=qs[i]: store.search("bench", q, 10))[0])
        writer.delete_faces("bench", [face[0].face_id])
        compactions.append(timed(lambda q=qs[i]: store.search("bench", q, 10))[0])
    result["search_after_other_writer_added_1"] = percentiles(appends)
    result["search_after_other_writer_deleted_1"] = percentiles(compactions)
    writer.close()
    store.close()
    return result


def bench_add(rng, workdir, synchronous, calls, per_call):
    store = EmbeddedStore(Path(workdir) / f"add-{synchronous}-{per_call}", synchronous=synchronous)
    store.create_collection("bench", "bench")
    batches = [faces_for(vectors(rng, per_call)) for _ in range(calls)]
    t0 = time.perf_counter()
    for batch in batches:
        store.add_faces("bench", batch)
    elapsed = time.perf_counter() - t0
    store.close()
    return {"synchronous": synchronous, "faces_per_call": per_call, "calls": calls,
            "calls_per_s": round(calls / elapsed, 1),
            "faces_per_s": round(calls * per_call / elapsed, 1),
            "ms_per_call": round(elapsed / calls * 1000, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", default=None, help="where to put the temporary stores")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    load_at_start = os.getloadavg()

    with tempfile.TemporaryDirectory(dir=args.dir) as workdir:
        search = [bench_search(size, args.queries, rng, workdir) for size in args.sizes]
        add = [bench_add(rng, workdir, "FULL", 500, 1),
               bench_add(rng, workdir, "NORMAL", 500, 1),
               bench_add(rng, workdir, "FULL", 100, 100),
               bench_add(rng, workdir, "NORMAL", 100, 100)]

    report = {
        "benchmark": "benchmarks/search_latency.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg(),
                    "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "sqlite": sqlite3.sqlite_version},
        "vectors": f"random {DIM}-D, norms uniform in [0.9, 1.1]",
        "search": search,
        "add_faces": add,
    }
    for r in search:
        print(f"{r['faces']:>7} faces: top10 p50 {r['search_top10']['p50_ms']:.2f} ms "
              f"p95 {r['search_top10']['p95_ms']:.2f} ms | top100 p50 {r['search_top100']['p50_ms']:.2f} ms "
              f"p95 {r['search_top100']['p95_ms']:.2f} ms | numpy core p50 "
              f"{r['numpy_einsum_argpartition_top10']['p50_ms']:.2f} ms | first search (index load) "
              f"{r['index_load_first_search_ms']:.0f} ms | after add p50 "
              f"{r['search_after_other_writer_added_1']['p50_ms']:.2f} ms | after delete p50 "
              f"{r['search_after_other_writer_deleted_1']['p50_ms']:.2f} ms")
    for r in add:
        print(f"add_faces {r['faces_per_call']:>3}/call synchronous={r['synchronous']:<6}: "
              f"{r['calls_per_s']:8.1f} calls/s  {r['faces_per_s']:9.1f} faces/s  "
              f"({r['ms_per_call']:.3f} ms/call)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
