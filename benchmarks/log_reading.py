"""What reading the search log over the wire costs, against the log's size.

For each log size, a SearchLog in a temporary data directory is filled with copies of one
search's record (1.4 kB, 10 matches; written in one transaction, the chain computed as the
log computes it), and the three reading operations are timed through
faceaudit.accountability.log_reading.LogReader (what FaceAuditService calls; the HTTP layer
adds the same small cost to each), interleaved round by round: the first page of a listing,
a listing whose KeyName filter matches nothing (the whole log walked) with the substring
pre-test and without it (a KeyName no JSON encoder keeps as is, so every record is parsed),
VerifySearchLog, GetTransparencyReport; then verification with its fast hash check and
without it (every record re-encoded), in pairs. Reported: medians with a bootstrap 95%
interval over runs, and paired ratios.

Writes benchmarks/results/log_reading.json.

    nice -n 10 .venv/bin/python benchmarks/log_reading.py [--sizes 1000 10000] [--runs 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np

from faceaudit.accountability import searchlog
from faceaudit.accountability.log_reading import LogReader
from faceaudit.storage.sqlite_transactions import immediate_transaction

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SEARCH = {"kind": "request", "operation": "SearchFacesByImage", "collection": "watch", "policy": "personal",
          "key": {"name": "analyst", "access_key_id": "AKIDEXAMPLE", "role": "operator", "unit": "north"},
          "parameters": {"FaceMatchThreshold": 95, "MaxFaces": 10}, "status": 200, "image_sha256": ["ab" * 32],
          "result": {"matches": 10},
          "matches": [{"FaceId": "11111111-2222-3333-4444-555555555555", "Similarity": 97.5}] * 10}


def filled_log(data_dir: str, records: int) -> searchlog.SearchLog:
    """A log of ``records`` copies of SEARCH, chained by the log's own insert (one transaction: no fsync each)."""
    log = searchlog.SearchLog(data_dir)
    body = searchlog._normalized(SEARCH)  # what append stores
    with immediate_transaction(log._conn) as conn:
        for _ in range(records):
            log._insert(conn, body)
    log.checkpoint()
    return log


def median_ci(values, seed: int = 0) -> dict:
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, (2000, len(values))), axis=1)
    return {"median": round(float(np.median(values)), 4), "ci95": [round(float(np.percentile(medians, 2.5)), 4),
            round(float(np.percentile(medians, 97.5)), 4)], "n": len(values), "ci_method": "bootstrap over runs"}


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def measure(records: int, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        log = filled_log(data_dir, records)
        try:
            reader = LogReader(log)
            cases: dict[str, Callable[[], object]] = {
                "list_first_page_100": lambda: reader.list_records({}),
                "list_filter_matching_none_substring_test": lambda: reader.list_records({"KeyName": "nobody"}),
                "list_filter_matching_none_parsed": lambda: reader.list_records({"KeyName": "nobodÿ"}),
                "verify": lambda: reader.verify({}),
                "transparency": lambda: reader.transparency({"Since": "2026-01-01"}),
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            texts, checkpoints = log.snapshot()
            fast, slow = [], []

            def verify_all() -> None:
                assert searchlog.verify(texts, checkpoints, public_key=log.public_key, log_id=log.log_id).ok

            def verify_reencoding() -> None:
                with mock.patch.object(searchlog, "_hashed_as_stored", lambda text, record: False):
                    verify_all()

            for run in range(runs):
                for name, call in cases.items():
                    times[name].append(timed(call))
                pair = [(fast, verify_all), (slow, verify_reencoding)]
                for into, call in pair if run % 2 else pair[::-1]:  # which goes first alternates
                    into.append(timed(call))
        finally:
            log.close()
    result = {name: median_ci(values) for name, values in times.items()}
    parsed, tested = (np.array(times["list_filter_matching_none_parsed"]),
                      np.array(times["list_filter_matching_none_substring_test"]))
    result["ratio_parsed_over_substring_test"] = median_ci(parsed / tested)
    result["verify_fast_hash_check_ms"] = median_ci(fast)
    result["verify_reencoding_every_record_ms"] = median_ci(slow)
    result["ratio_reencoding_over_fast_hash_check"] = median_ci(np.array(slow) / np.array(fast))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    out = {"benchmark": "log_reading", "when": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
           "record_bytes": len(searchlog.canonical(SEARCH)), "times_ms": {}}
    for size in args.sizes:
        out["times_ms"][str(size)] = measure(size, args.runs)
        print(json.dumps({size: out["times_ms"][str(size)]}, indent=1))
    out["machine"]["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log_reading.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
