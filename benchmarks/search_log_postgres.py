"""The search log's appends on PostgreSQL beside SQLite, in one run: does the group commit still help?

For each backend (a SQLite data directory; a throwaway PostgreSQL from the ``pgserver`` wheel,
16.2 on a Unix socket, default settings) and each mode -- ``group`` is SearchLog.append (threads
that append while a transaction is in flight share the next one), ``single`` writes every
record in a transaction of its own (the same write path, one record at a time) -- THREADS
threads append 200 records between them; rounds alternate the modes, a fresh log each round.
Reported per backend and mode: append latency p50 with a bootstrap 95% interval over every
append, throughput per round (median, range) and transactions per append.

``--compare-with REV``: every round also runs the SearchLog of git revision REV (its searchlog.py
and storage/sql_database.py, loaded beside this code's), the two in alternating order, and the
rows gain ``code`` ("now" or REV) and, per backend and mode, the paired ratio REV / now of the
rounds' median latencies -- a before/after of the write path in one run (written to
benchmarks/results/search_log_postgres_compared.json).

Writes benchmarks/results/search_log_postgres.json.

    nice -n 10 .venv/bin/python benchmarks/search_log_postgres.py [--threads 8] [--rounds 5] [--compare-with REV]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
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


def module_of_revision(revision: str, path: str, name: str, replace: dict[str, str]) -> types.ModuleType:
    """The module at ``path`` in git ``revision``, loaded as ``name`` (``replace``: its imports redirected)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    for old, new in replace.items():
        source = source.replace(old, new)
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def log_classes_of_revision(revision: str) -> tuple[type, type]:
    """(SearchLog, OneAtATime) of git ``revision``: its search log on its own database seam."""
    seam = module_of_revision(revision, "src/faceaudit/storage/sql_database.py", f"sql_database_at_{revision}", {})
    log = module_of_revision(revision, "src/faceaudit/accountability/searchlog.py", f"searchlog_at_{revision}",
                             {"from faceaudit.storage.sql_database import": f"from {seam.__name__} import"})

    class OneAtATimeThen(log.SearchLog):
        _one = threading.Lock()

        def append(self, record):
            ticket = log._Waiting(log._normalized(record))
            with self._one:
                self._write_batch([ticket])
            if ticket.stored is None:
                raise RuntimeError(ticket.error)
            return ticket.stored

    return log.SearchLog, OneAtATimeThen


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
    parser.add_argument("--compare-with", metavar="REV", help="also run the search log of this git revision")
    args = parser.parse_args()
    codes = {"now": (SearchLog, OneAtATime)}
    if args.compare_with:
        codes[args.compare_with] = log_classes_of_revision(args.compare_with)
    work = Path(tempfile.mkdtemp(prefix="faceaudit-pg-bench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    rng = np.random.default_rng(5)
    rows = []
    try:
        url = server.get_uri()
        runs: dict[tuple[str, str, str], dict] = {}
        for backend in ("sqlite", "postgres"):
            for round_ in range(args.rounds):
                order = list(codes.items()) if round_ % 2 == 0 else list(codes.items())[::-1]
                for code, (mode, kind) in ((c, m) for c, kinds in order for m in zip(("group", "single"), kinds)):
                    folder = Path(tempfile.mkdtemp(dir=work))
                    database = None
                    if backend == "postgres":
                        schema = "bench_" + uuid.uuid4().hex[:10]
                        with psycopg.connect(url, autocommit=True) as conn:
                            conn.execute(f'CREATE SCHEMA "{schema}"')
                        database = f"{url}{'&' if '?' in url else '?'}options=-c%20search_path%3D{schema}"
                    log = kind(folder, database=database, checkpoint_every=10**9, checkpoint_seconds=1e9)
                    latencies, wall = one_round(log, args.threads)
                    run = runs.setdefault((code, backend, mode), {"latencies": [], "per_s": [], "transactions": 0,
                                                                  "round_medians": []})
                    run["latencies"] += latencies
                    run["round_medians"].append(float(np.median(latencies)))
                    run["per_s"].append(APPENDS / wall)
                    run["transactions"] += log.transactions
                    log.close()
        for (code, backend, mode), run in runs.items():
            latencies_ms = np.asarray(run["latencies"]) * 1000
            rows.append({"code": code, "backend": backend, "mode": mode, "threads": args.threads,
                         "n": len(latencies_ms),
                         "append_p50_ms_ci95": median_ci(latencies_ms, rng),
                         "append_p95_ms": float(np.percentile(latencies_ms, 95)),
                         "per_s_median": float(np.median(run["per_s"])),
                         "per_s_range": [float(min(run["per_s"])), float(max(run["per_s"]))],
                         "transactions_per_append": run["transactions"] / len(latencies_ms)})
            if code != "now":
                ratios = np.asarray(run["round_medians"]) / np.asarray(runs["now", backend, mode]["round_medians"])
                rows[-1]["p50_ratio_over_now_by_round"] = {"n_rounds": len(ratios),
                                                           "median_ci95": median_ci(ratios, rng)}
            print(json.dumps(rows[-1]))
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "search_log_postgres_compared.json" if args.compare_with else "search_log_postgres.json"
    (RESULTS / name).write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
         "rounds": args.rounds, "appends_per_round": APPENDS, "compared_with": args.compare_with, "rows": rows},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
