"""What the search log adds to a SearchFacesByImage request: the same requests with the log on and off.

In one process, one engine, one EmbeddedStore and one RekognitionService (a gallery of
faces-dev photos, or the astronaut and its mirror image when faces-dev is absent) sit behind
two RekognitionApps that differ only in ``search_log`` (a SearchLog in a temporary data
directory, or none). Each pair of requests sends the same signed SearchFacesByImage through
``RekognitionApp.handle`` -- the whole request after the HTTP socket: signature check, role,
decode, detection, embedding, search, encode and, with the log on, the durable append --
once to each app, which goes first alternating, after a warm-up. Reported: p50 and spread of
each, and the median of the paired differences (log on - log off) with a bootstrap 95%
interval.

Then the log's own part, alone, interleaved the same way: ``SearchLog.append`` of the record
of such a search (with its matches), next to one bare ``write`` + ``fdatasync`` of the same
number of bytes to a file in the same directory -- the disk flush any durable record costs,
whatever the format. Last, 8 threads appending at once (as 8 request threads do): the log's
group commit against one append at a time, in alternating rounds.

Writes benchmarks/results/search_log.json.

    nice -n 10 .venv/bin/python benchmarks/search_log.py [--pairs 150] [--appends 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
KEY_ID, SECRET = "BENCHKEY000000000001", "bench-secret-0123456789abcdefghijklmnop"


def _signed(body: bytes) -> list[tuple[bytes, bytes]]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url="http://bench.local/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "RekognitionService.SearchFacesByImage"})
    SigV4Auth(Credentials(KEY_ID, SECRET), "rekognition", "us-east-1").add_auth(request)
    headers = [("host", "bench.local"), ("content-length", str(len(body))), *request.headers.items()]
    return [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers]


def _photos(limit: int) -> tuple[list[bytes], str]:
    from faceaudit.datasets import faces_dev
    root = faces_dev.locate()
    if root is not None:
        labels = [label for label in faces_dev.read_labels(root) if label.identity is None]
        step = max(1, len(labels) // limit)
        return [(root / label.path).read_bytes() for label in labels[::step][:limit]], f"faces-dev ({root.name})"
    from skimage import data

    sys.path.insert(0, str(REPO / "tests"))
    from support.images import encode
    astronaut = data.astronaut()
    return [encode(astronaut), encode(np.ascontiguousarray(astronaut[:, ::-1]))], "astronaut (scikit-image)"


def _summary(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms)
    return {"n": int(a.size), "p50": round(float(np.median(a)), 4), "p10": round(float(np.percentile(a, 10)), 4),
            "p25": round(float(np.percentile(a, 25)), 4), "p75": round(float(np.percentile(a, 75)), 4),
            "p90": round(float(np.percentile(a, 90)), 4), "mean": round(float(a.mean()), 4)}


def _median_difference(on: list[float], off: list[float], resamples: int = 4000) -> dict[str, float]:
    """Median of paired differences (on - off) with a percentile bootstrap 95% interval over pairs."""
    diff = np.asarray(on) - np.asarray(off)
    rng = np.random.default_rng(20261201)
    medians = np.median(diff[rng.integers(0, diff.size, size=(resamples, diff.size))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return {"n_pairs": int(diff.size), "median_ms": round(float(np.median(diff)), 4),
            "ci95_ms": [round(float(low), 4), round(float(high), 4)], "ci_method": "bootstrap over pairs"}


def measure_requests(pairs: int, gallery_size: int, warmup: int, root: Path) -> dict:
    import base64

    from faceaudit.accountability.searchlog import SearchLog
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.runtime import default_engine
    from faceaudit.server.app import RekognitionApp
    from faceaudit.server.sigv4 import Credentials
    from faceaudit.storage import EmbeddedStore

    photos, source = _photos(gallery_size)
    store = EmbeddedStore(root / "faces")
    service = RekognitionService(default_engine(), store)
    service.call("CreateCollection", {"CollectionId": "gallery"})
    indexed = 0
    for photo in photos:
        indexed += len(service.call("IndexFaces", {"CollectionId": "gallery", "Image": {"Bytes": photo},
                                                   "MaxFaces": 1, "QualityFilter": "NONE"})["FaceRecords"])
    log = SearchLog(root / "log")
    apps = {"on": RekognitionApp(service, Credentials(KEY_ID, SECRET), threads=1, search_log=log),
            "off": RekognitionApp(service, Credentials(KEY_ID, SECRET), threads=1)}
    times: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(warmup + pairs):
        body = json.dumps({"CollectionId": "gallery", "Image": {"Bytes": base64.b64encode(
            photos[i % len(photos)]).decode()}, "FaceMatchThreshold": 80, "MaxFaces": 10}).encode()
        order = ("on", "off") if i % 2 == 0 else ("off", "on")
        for which in order:
            headers = _signed(body)
            started = time.perf_counter()
            outcome = apps[which].handle("POST", "/", "", headers, body, f"bench-{which}-{i}")
            elapsed = (time.perf_counter() - started) * 1000
            if outcome.status != 200:
                raise RuntimeError(f"search failed: {outcome.status} {outcome.body[:300]!r}")
            if i >= warmup:
                times[which].append(elapsed)
    for app in apps.values():
        app.close()
    verified = log.verify()
    log.close()
    store.close()
    return {"gallery": {"source": source, "photos": len(photos), "faces_indexed": indexed},
            "summary_ms": {"log_on": _summary(times["on"]), "log_off": _summary(times["off"])},
            "difference_on_minus_off": _median_difference(times["on"], times["off"]),
            "log_verified_after": verified.ok, "log_records": verified.records}


def measure_appends(appends: int, root: Path) -> dict:
    from faceaudit.accountability.searchlog import SearchLog, canonical

    log = SearchLog(root / "append")
    record = {"kind": "request", "time": "2026-12-01T23:15:01.123Z", "request_id": "0" * 36,
              "key": {"name": "analyst", "access_key_id": KEY_ID, "role": "operator", "unit": "north"},
              "operation": "SearchFacesByImage", "collection": "gallery", "policy": None,
              "parameters": {"FaceMatchThreshold": 80.0, "MaxFaces": 10}, "purpose": "missing person",
              "case": "C-2026-17", "image_sha256": ["ab" * 32], "status": 200, "error": None, "reason": None,
              "result": {"faces": 1, "matches": 10},
              "matches": [{"FaceId": f"{i:08d}-0000-4000-8000-000000000000", "Similarity": 91.5} for i in range(10)]}
    size = len(canonical(record)) + 200  # with seq, prev and hash
    fd = os.open(root / "append" / "flush-reference.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: dict[str, list[float]] = {"append": [], "write_fdatasync": []}
    payload = b"x" * size
    for i in range(appends + 10):
        order = ("append", "write_fdatasync") if i % 2 == 0 else ("write_fdatasync", "append")
        for which in order:
            started = time.perf_counter()
            if which == "append":
                log.append(record)
            else:
                os.write(fd, payload)
                os.fdatasync(fd)
            elapsed = (time.perf_counter() - started) * 1000
            if i >= 10:
                times[which].append(elapsed)
    os.close(fd)
    log.close()
    return {"record_bytes": size, "summary_ms": {k: _summary(v) for k, v in times.items()},
            "difference_append_minus_flush": _median_difference(times["append"], times["write_fdatasync"])}


def measure_concurrent(threads: int, per_thread: int, rounds: int, root: Path) -> dict:
    """8 threads appending at once, as 8 request threads do: group commit (the log as shipped)
    against one append at a time (an outside lock: one transaction, one flush per record),
    in alternating rounds."""
    import threading

    from faceaudit.accountability.searchlog import SearchLog

    log = SearchLog(root / "concurrent")
    one_at_a_time = threading.Lock()
    results: dict[str, dict[str, list[float]]] = {
        mode: {"latency_ms": [], "records_per_s": [], "records_per_transaction": []}
        for mode in ("group_commit", "one_at_a_time")}

    def worker(mode: str, n: int, latencies: list[float]) -> None:
        for i in range(per_thread):
            started = time.perf_counter()
            if mode == "one_at_a_time":
                with one_at_a_time:
                    log.append({"kind": "request", "request_id": f"{mode}-{n}-{i}"})
            else:
                log.append({"kind": "request", "request_id": f"{mode}-{n}-{i}"})
            latencies.append((time.perf_counter() - started) * 1000)

    for r in range(rounds):
        for mode in (("group_commit", "one_at_a_time") if r % 2 == 0 else ("one_at_a_time", "group_commit")):
            latencies: list[float] = []
            before = log.transactions
            started = time.perf_counter()
            pool = [threading.Thread(target=worker, args=(mode, n, latencies)) for n in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            elapsed = time.perf_counter() - started
            results[mode]["latency_ms"] += latencies
            results[mode]["records_per_s"].append(threads * per_thread / elapsed)
            results[mode]["records_per_transaction"].append(threads * per_thread / (log.transactions - before))
    verified = log.verify()
    log.close()
    return {"threads": threads, "appends_per_thread": per_thread, "rounds": rounds,
            **{mode: {"latency_ms": _summary(v["latency_ms"]),
                      "records_per_s": _summary(v["records_per_s"]),
                      "records_per_transaction_mean": round(float(np.mean(v["records_per_transaction"])), 2)}
               for mode, v in results.items()},
            "log_verified_after": verified.ok, "log_records": verified.records}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150, help="request pairs (log on, log off)")
    parser.add_argument("--gallery", type=int, default=200, help="faces-dev photos indexed")
    parser.add_argument("--appends", type=int, default=300, help="append / flush pairs")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of 8 threads x 25 appends, per mode")
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="faceaudit-searchlog-bench-", dir=REPO) as tmp:
        root = Path(tmp)
        requests = measure_requests(args.pairs, args.gallery, args.warmup, root)
        appends = measure_appends(args.appends, root)
        concurrent = measure_concurrent(8, 25, args.rounds, root)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": "SearchFacesByImage through RekognitionApp.handle with the search log on and off, interleaved "
                "pairs in one process; then SearchLog.append alone next to one write+fdatasync",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_start": [round(x, 2) for x in load_start],
                    "load_end": [round(x, 2) for x in os.getloadavg()],
                    "disk": "the data directory's filesystem (the repository's disk)"},
        "target": "the log adds under 2 ms at p50",
        "requests": requests, "append": appends, "concurrent_appends": concurrent,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_log.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
