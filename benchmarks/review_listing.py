"""ListReviewResults' query (ReviewStore.held_searches) with and without the ``items_searcher`` index.

One temporary review store holds ``--items`` items (default 200,000) of 500 searchers, written
straight into its ``items`` table (made-up rows: the listing reads no picture and no candidate);
the searcher timed holds 20 items, the oldest, so without the index the query walks every newer
item to find them. A busy searcher (400 items, a page of 100) is timed too. The index is dropped
and re-created between rounds, in one process, so both variants see the same machine load.

Reports the median per call with a bootstrap 95% interval (``--rounds`` x 20 calls per variant),
and writes results/review_listing.json.

    nice -n 10 python benchmarks/review_listing.py [--items 200000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from faceaudit.access import AccessKey
from faceaudit.accountability.review import ReviewStore
from faceaudit.stats import percentile_interval, rng_for

RESULTS = Path(__file__).resolve().parent / "results"
SEARCHERS, FEW = 500, 20
INDEX = "CREATE INDEX IF NOT EXISTS items_searcher ON items (searcher_name, seq)"


def median_with_interval(samples_ms: list[float], seed: int, label: str) -> dict:
    values = np.asarray(samples_ms)
    replicates = np.median(rng_for(seed, "median", label).choice(values, size=(2000, len(values))), axis=1)
    low, high = percentile_interval(replicates)
    return {"n": len(values), "median_ms": float(np.median(values)), "median_ci95_ms": [low, high]}


def fill(path: Path, items: int) -> None:
    rows = [(str(uuid.uuid4()), 1_700_000_000_000 + i, "watch", "public-safety", "SearchFacesByImage", "lead",
             "case", None, f"AK{name}", name, None, None, 2, "open", secrets.token_bytes(16))
            for i in range(items) for name in ["few" if i < FEW else f"op-{i % SEARCHERS}"]]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items (item_id, created_ms, collection, policy, operation, purpose, case_ref, "
                     "request_id, searcher_key_id, searcher_name, searcher_unit, probe_blob, required, state, "
                     "shuffle_seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load_start = os.getloadavg()
    searchers = {who: AccessKey(f"AK{name}", name, "operator", None, datetime.now(UTC), "created")
                 for who, name in (("few", "few"), ("busy", "op-1"))}
    samples: dict[str, list[float]] = {f"{v}/{w}": [] for v in ("index", "no-index") for w in searchers}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ReviewStore(data).close()
        fill(data / "review.db", args.items)
        for _ in range(args.rounds):
            for variant in ("index", "no-index"):
                conn = sqlite3.connect(data / "review.db", isolation_level=None)
                conn.execute(INDEX if variant == "index" else "DROP INDEX IF EXISTS items_searcher")
                conn.close()
                with ReviewStore(data) as store:  # fresh connections: no statement planned before the change
                    for who, key in searchers.items():
                        for _ in range(20):
                            started = time.perf_counter()
                            store.held_searches(key, max_results=100)
                            samples[f"{variant}/{who}"].append((time.perf_counter() - started) * 1000)
    summary = {"items": args.items, "searchers": SEARCHERS + 1, "few_items": FEW, "busy_items": args.items // SEARCHERS,
               "page": 100, "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
               "load_average": {"start": load_start, "end": os.getloadavg()},
               "calls": {name: median_with_interval(values, args.seed, name) for name, values in samples.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "review_listing.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, figures in summary["calls"].items():
        low, high = figures["median_ci95_ms"]
        print(f"{name:16} median {figures['median_ms']:8.3f} ms  95% CI [{low:.3f}, {high:.3f}]  n={figures['n']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
