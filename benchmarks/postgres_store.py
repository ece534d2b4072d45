"""The PostgreSQL backend beside the embedded one, in one run: exact search and add_faces.

Synthetic data (random 128-D vectors with norms around 1, the scale of dlib embeddings; no
images, no models), on a throwaway PostgreSQL from the ``pgserver`` wheel (16.2, pgvector
0.6.2, Unix socket, default settings) and a throwaway EmbeddedStore, on the same machine,
measured interleaved (query i on one store, then on the other), so load on the machine hits
both alike. For each size:

* exact search, top 10, with records: p50 / p95 per store, each p50 with a 95% bootstrap
  interval over the queries, and the ratio of the two p50s with its interval;
* add_faces, one face per call (IndexFaces' pattern): PostgreSQL with its HNSW index, without
  it, and the embedded store (synchronous=FULL).

Writes benchmarks/results/postgres_store.json.

    .venv/bin/python benchmarks/postgres_store.py [--sizes 10000 50000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from faceaudit.stats import percentile_interval
from faceaudit.storage import EmbeddedStore, PostgresStore, StoredFace

DIM = 128
RESULTS = Path(__file__).resolve().parent / "results" / "postgres_store.json"
RESAMPLES = 2000


def vectors(rng, n):
    v = rng.standard_normal((n, DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v *= rng.uniform(0.9, 1.1, size=(n, 1))
    return v.astype(np.float32)


def face(vector):
    return StoredFace(str(uuid.uuid4()), str(uuid.uuid4()), None,
                      {"Width": 0.5, "Height": 0.5, "Left": 0.1, "Top": 0.1}, 99.0, "bench", None, vector)


def median_with_interval(values_ms, rng):
    values = np.asarray(values_ms)
    replicates = np.median(values[rng.integers(0, len(values), (RESAMPLES, len(values)))], axis=1)
    low, high = percentile_interval(replicates)
    return {"n": len(values), "p50_ms": round(float(np.median(values)), 3),
            "p50_ci95_ms": [round(low, 3), round(high, 3)],
            "p95_ms": round(float(np.percentile(values, 95)), 3)}


def ratio_with_interval(a_ms, b_ms, rng):
    """p50(a) / p50(b) over paired queries, bootstrap by query."""
    a, b = np.asarray(a_ms), np.asarray(b_ms)
    idx = rng.integers(0, len(a), (RESAMPLES, len(a)))
    replicates = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    low, high = percentile_interval(replicates)
    return {"ratio": round(float(np.median(a) / np.median(b)), 2), "ci95": [round(low, 2), round(high, 2)]}


def timed(call):
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000.0, result


def bench_search(url, size, queries, rng, work):
    data = vectors(rng, size)
    embedded = EmbeddedStore(work / f"e{size}", synchronous="NORMAL")
    postgres = PostgresStore(url, schema=f"bench_{size}", hnsw=False)
    faces = [face(v) for v in data]  # the same FaceIds in both stores
    for store in (embedded, postgres):
        store.create_collection("c", "bench")
        for start in range(0, size, 2000):
            store.add_faces("c", faces[start:start + 2000])
    embedded.search("c", data[0], 10)  # the embedded index loads on its first search
    times = {"embedded": [], "postgres": []}
    for q in vectors(rng, queries):
        for name, store in (("embedded", embedded), ("postgres", postgres)):
            ms, _ = timed(lambda store=store, q=q: store.search("c", q, 10))
            times[name].append(ms)
        # same answers, to the last bit (the point of the backend's design)
        assert [(f.face_id, d) for f, d in embedded.search("c", q, 10)] == [
            (f.face_id, d) for f, d in postgres.search("c", q, 10)]
    embedded.close()
    postgres.close()
    return {"faces": size, "embedded": median_with_interval(times["embedded"], rng),
            "postgres": median_with_interval(times["postgres"], rng),
            "postgres_over_embedded": ratio_with_interval(times["postgres"], times["embedded"], rng)}


def bench_adds(url, count, rng, work):
    stores = {"postgres_hnsw": PostgresStore(url, schema="bench_add_hnsw"),
              "postgres_no_hnsw": PostgresStore(url, schema="bench_add_plain", hnsw=False),
              "embedded_full": EmbeddedStore(work / "adds")}
    for store in stores.values():
        store.create_collection("c", "bench")
        store.add_faces("c", [face(v) for v in vectors(rng, 1000)])  # not an empty index
    times: dict[str, list[float]] = {name: [] for name in stores}
    for v in vectors(rng, count):
        for name, store in stores.items():
            ms, _ = timed(lambda store=store, v=v: store.add_faces("c", [face(v)]))
            times[name].append(ms)
    for store in stores.values():
        store.close()
    return {name: median_with_interval(values, rng) for name, values in times.items()}


def main() -> None:
    import pgserver

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--adds", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(12)
    work = Path(tempfile.mkdtemp(prefix="faceaudit-pg-bench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    try:
        url = server.get_uri()
        version = PostgresStore(url, schema="bench_version")
        versions = {"pgvector": ".".join(map(str, version.pgvector_version))}
        version.close()
        result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                  **versions, "search_top10": [bench_search(url, size, args.queries, rng, work) for size in args.sizes],
                  "add_one_face": bench_adds(url, args.adds, rng, work)}
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
