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

``--compare-with REV``: the listings are also timed through the LogReader of git revision REV
(its log_reading.py, loaded beside this one, reading the same log), each pair in alternating
order, and the paired ratios REV / now reported -- a before/after in one process.

Writes benchmarks/results/log_reading.json.

    nice -n 10 .venv/bin/python benchmarks/log_reading.py [--sizes 1000 10000] [--runs 12] [--compare-with REV]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np

from faceaudit.accountability import searchlog
from faceaudit.accountability.log_reading import LogReader

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
    with log._db.write() as conn:
        log._chain(conn, [body] * records)
    log.checkpoint()
    return log


LISTINGS = {"list_first_page_100": {}, "list_filter_matching_none_substring_test": {"KeyName": "nobody"},
            "list_filter_matching_none_parsed": {"KeyName": "nobodÿ"},
            "list_page_after_a_token": None}  # the second page of 100, unfiltered


def reader_of_revision(revision: str) -> type:
    """The LogReader class of ``src/faceaudit/accountability/log_reading.py`` at git ``revision``."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{revision}:src/faceaudit/accountability/log_reading.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"log_reading_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:log_reading.py", "exec"), module.__dict__)
    return module.LogReader


def listing(reader, request: dict | None) -> Callable[[], object]:
    if request is not None:
        return lambda: reader.list_records(request)
    token = reader.list_records({})["NextToken"]
    return lambda: reader.list_records({"NextToken": token})


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


def measure(records: int, runs: int, before: type | None = None) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        log = filled_log(data_dir, records)
        try:
            reader = LogReader(log)
            cases: dict[str, Callable[[], object]] = {name: listing(reader, request)
                                                      for name, request in LISTINGS.items()}
            old = {} if before is None else {name: listing(before(log), request) for name, request in LISTINGS.items()}
            for name in old:  # the same answers, or the comparison means nothing
                assert old[name]() == cases[name](), name
            old_times: dict[str, list[float]] = {name: [] for name in old}
            new_times: dict[str, list[float]] = {name: [] for name in old}
            cases.update({
                "verify": lambda: reader.verify({}),
                "transparency": lambda: reader.transparency({"Since": "2026-01-01"}),
            })
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
                for name in old:
                    pair = [(old_times[name], old[name]), (new_times[name], cases[name])]
                    for into, call in pair if run % 2 else pair[::-1]:
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
    if old:
        result["before_after"] = {name: {"before_ms": median_ci(old_times[name]), "now_ms": median_ci(new_times[name]),
                                         "ratio_before_over_now": median_ci(np.array(old_times[name])
                                                                            / np.array(new_times[name]))}
                                  for name in old}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--compare-with", metavar="REV", help="also time the listings of this git revision")
    args = parser.parse_args()
    before = reader_of_revision(args.compare_with) if args.compare_with else None
    out = {"benchmark": "log_reading", "when": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
           "record_bytes": len(searchlog.canonical(SEARCH)), "compared_with": args.compare_with, "times_ms": {}}
    for size in args.sizes:
        out["times_ms"][str(size)] = measure(size, args.runs, before)
        print(json.dumps({size: out["times_ms"][str(size)]}, indent=1))
    out["machine"]["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log_reading.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
