"""The search log's appends on PostgreSQL beside SQLite, in one run: does the group commit still help?

For each backend (a SQLite data directory; a throwaway PostgreSQL from the ``pgserver`` wheel,
16.2 on a Unix socket, default settings) and each mode -- ``group`` is SearchLog.append (threads
that append while a transaction is in flight share the next one), ``single`` writes every
record in a transaction of its own (the same write path, one record at a time) -- THREADS
threads append 200 records between them; rounds alternate the modes, a fresh log each round.
Reported per backend and mode: append latency p50 with a bootstrap 95% interval over every
append, throughput per round (median, range) and transactions per append.

Writes benchmarks/results/search_log_postgres.json.

    nice -n 10 .venv/bin/python benchmarks/search_log_postgres.py [--threads 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from faceaudit.accountability.searchlog import SearchLog, _normalized, _Waiting

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
APPENDS = 200


class OneAtATime(SearchLog):
    """Every append its own transaction (what the log did without group commit)."""

    _one = threading.Lock()

    def append(self, record):
        ticket = _Waiting(_normalized(record))
        with self._one:
            self._write_batch([ticket])
        if ticket.stored is None:
            raise RuntimeError(ticket.error)
        return ticket.stored


def one_round(log: SearchLog, threads: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(APPENDS // threads):
            start = time.perf_counter()
            log.append({"kind": "request", "request_id": f"{n}-{i}", "operation": "SearchFacesByImage"})
            with lock:
                latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, time.perf_counter() - start


def median_ci(values_ms: np.ndarray, rng: np.random.Generator) -> list[float]:
    boots = [np.median(rng.choice(values_ms, len(values_ms))) for _ in range(2000)]
    return [float(np.median(values_ms)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def main() -> None:
    import pgserver
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faceaudit-pg-bench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    rng = np.random.default_rng(5)
    rows = []
    try:
        url = server.get_uri()
        runs: dict[tuple[str, str], dict] = {}
        for backend in ("sqlite", "postgres"):
            for _ in range(args.rounds):
                for mode, kind in (("group", SearchLog), ("single", OneAtATime)):
                    folder = Path(tempfile.mkdtemp(dir=work))
                    database = None
                    if backend == "postgres":
                        schema = "bench_" + uuid.uuid4().hex[:10]
                        with psycopg.connect(url, autocommit=True) as conn:
                            conn.execute(f'CREATE SCHEMA "{schema}"')
                        database = f"{url}{'&' if '?' in url else '?'}options=-c%20search_path%3D{schema}"
                    log = kind(folder, database=database, checkpoint_every=10**9, checkpoint_seconds=1e9)
                    latencies, wall = one_round(log, args.threads)
                    run = runs.setdefault((backend, mode), {"latencies": [], "per_s": [], "transactions": 0})
                    run["latencies"] += latencies
                    run["per_s"].append(APPENDS / wall)
                    run["transactions"] += log.transactions
                    log.close()
        for (backend, mode), run in runs.items():
            latencies_ms = np.asarray(run["latencies"]) * 1000
            rows.append({"backend": backend, "mode": mode, "threads": args.threads, "n": len(latencies_ms),
                         "append_p50_ms_ci95": median_ci(latencies_ms, rng),
                         "append_p95_ms": float(np.percentile(latencies_ms, 95)),
                         "per_s_median": float(np.median(run["per_s"])),
                         "per_s_range": [float(min(run["per_s"])), float(max(run["per_s"]))],
                         "transactions_per_append": run["transactions"] / len(latencies_ms)})
            print(json.dumps(rows[-1]))
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_log_postgres.json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
         "rounds": args.rounds, "appends_per_round": APPENDS, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
