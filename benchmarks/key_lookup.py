"""What looking every request's key up in the key store costs, next to the single in-memory key of before.

Two server processes, built the same way (the real RekognitionApp, EmbeddedStore and
uvicorn configuration of ``faceaudit serve``; no face models: ListCollections needs none),
differ only in where access keys are looked up:

* ``static``: one key pair held in memory, checked as the single-key server did (before);
* ``store``: faceaudit.server.access.StoreKeys, one indexed SQLite read of
  ``DATA_DIR/access.db`` per request (after; what makes a revocation take effect at once);
* ``static2``: a second ``static`` server, so that the difference between two identical
  servers (the noise floor of this machine) is measured alongside.

Measured through boto3 (one client per server, no retries), in the same run, interleaved:
rounds of ``--block`` signed ListCollections to each server, the order alternating
(A-B-C, C-B-A), after a warm-up; also requests signed with an unknown access key id (refused
before the body is read; these cost a lookup too now). Then, in process, the lookup alone:
``StaticKeys.get`` vs ``StoreKeys.get`` vs ``PRAGMA data_version`` (the floor of any
per-request cross-process check on SQLite, e.g. a cache validated by a change counter).

Writes benchmarks/results/key_lookup.json and key_lookup.md.

    .venv/bin/python benchmarks/key_lookup.py [--requests 1000] [--block 100]

Run internally as ``key_lookup.py --serve static|store --data-dir D`` for each server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
KEY_ID, SECRET = "BENCHKEY000000000001", "bench-secret-0123456789abcdefghijklmnop"
_LISTENING = re.compile(r"faceaudit: listening on (http://\S+)")


# -- the servers ------------------------------------------------------------------------

def serve(variant: str, data_dir: str) -> None:
    from faceaudit.access import SQLiteKeyStore
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.server import runner
    from faceaudit.server.access import StoreKeys
    from faceaudit.server.app import RekognitionApp, configure_logging
    from faceaudit.server.sigv4 import Credentials
    from faceaudit.storage import EmbeddedStore

    configure_logging()
    store = EmbeddedStore(data_dir)
    service = RekognitionService(None, store)  # type: ignore[arg-type]  # ListCollections needs no engine
    keys: StoreKeys | Credentials
    if variant == "store":
        key_store = SQLiteKeyStore(data_dir)
        key_store.adopt(KEY_ID, SECRET, origin="environment")
        keys = StoreKeys(key_store)
    else:
        keys = Credentials(KEY_ID, SECRET)
    app = RekognitionApp(service, keys, threads=8, on_shutdown=[store.close])
    sock = runner._bind("127.0.0.1", 0)
    asyncio.run(runner._serve_single(app, sock, runner._url("127.0.0.1", sock.getsockname()[1])))


def start(variant: str, root: Path) -> tuple[subprocess.Popen, str]:
    data = root / variant
    data.mkdir(mode=0o700)
    from faceaudit.storage import EmbeddedStore
    with_collections = EmbeddedStore(data)
    for n in range(3):  # the same small answer from both
        with_collections.create_collection(f"bench-{n}", "1.0")
    with_collections.close()
    log = open(root / f"{variant}.log", "wb")
    process = subprocess.Popen([sys.executable, __file__, "--serve", variant, "--data-dir", str(data)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = _LISTENING.search((root / f"{variant}.log").read_text(errors="replace"))
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError((root / f"{variant}.log").read_text(errors="replace")[-3000:])


# -- measuring --------------------------------------------------------------------------

def client(url: str, key_id: str = KEY_ID):
    import boto3
    import botocore.config
    return boto3.client("rekognition", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=SECRET, config=botocore.config.Config(retries={"max_attempts": 1}))


def timed(call, n: int) -> list[float]:
    import botocore.exceptions
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        try:
            call()
        except botocore.exceptions.ClientError:
            pass  # the unknown key's UnrecognizedClientException
        samples.append(time.perf_counter() - began)
    return samples


def summary(samples_s: list[float], unit: float = 1e3) -> dict:
    values = np.asarray(samples_s) * unit
    return {"n": int(values.size), "median": round(float(np.median(values)), 4),
            "p10": round(float(np.percentile(values, 10)), 4), "p25": round(float(np.percentile(values, 25)), 4),
            "p75": round(float(np.percentile(values, 75)), 4), "p90": round(float(np.percentile(values, 90)), 4),
            "mean": round(float(values.mean()), 4)}


def interleaved(calls: dict[str, object], total: int, block: int) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    block_medians: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(max(1, total // block)):
        for name in names if round_ % 2 == 0 else names[::-1]:  # A-B-C, C-B-A, ...
            got = timed(calls[name], block)
            samples[name] += got
            block_medians[name].append(float(np.median(got)))

    def difference(name: str) -> dict:
        diffs = np.asarray(block_medians[name]) - np.asarray(block_medians["static"])
        return {"median": round(float(np.median(diffs)) * 1e3, 4), "min": round(float(diffs.min()) * 1e3, 4),
                "max": round(float(diffs.max()) * 1e3, 4), "blocks": int(diffs.size)}

    return {"summary_ms": {name: summary(s) for name, s in samples.items()},
            "block_median_difference_ms": {f"{name} - static": difference(name)
                                           for name in names if name != "static"}}


def lookups_in_process(root: Path, n: int) -> dict:
    """The lookup alone, without HTTP: microseconds per call, interleaved blocks of 1,000."""
    from faceaudit.access import SQLiteKeyStore
    from faceaudit.server.access import StaticKeys, StoreKeys
    from faceaudit.server.sigv4 import Credentials

    store = SQLiteKeyStore(root / "micro")
    store.adopt(KEY_ID, SECRET, origin="environment")
    for i in range(999):  # a store of 1,000 keys
        store.create(f"person-{i}", "operator")
    static, stored = StaticKeys(Credentials(KEY_ID, SECRET)), StoreKeys(store)
    conn = sqlite3.connect(store.path)  # a connection of its own to the store's file, for the floor
    calls = {"static dict": lambda: static.get(KEY_ID), "store lookup": lambda: stored.get(KEY_ID),
             "store, unknown id": lambda: stored.get("NOSUCHKEY00000000000"),
             "PRAGMA data_version": lambda: conn.execute("PRAGMA data_version").fetchone()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(max(1, n // 1000)):
        for name in calls if round_ % 2 == 0 else list(calls)[::-1]:
            call = calls[name]
            for _ in range(1000):
                began = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - began)
    conn.close()
    store.close()
    return {name: summary(s, unit=1e6) for name, s in samples.items()}


def markdown(result: dict) -> str:
    lines = ["# Key lookup per request: in-memory single key (before) vs key store (after)", "",
             f"Run {result['when']} on {result['machine']['cpus']} CPUs ({result['machine']['platform']}), "
             f"load average {result['machine']['load_start']} at start, {result['machine']['load_end']} at end. "
             "boto3 and the servers share the machine's cores; static2 is a second static server (the noise "
             "floor: two identical servers); interleaved blocks of "
             f"{result['block']} requests (A-B-C, C-B-A), after {result['warmup']} warm-up requests each.", ""]
    for title, key in (("Signed ListCollections", "list_collections"),
                       ("Requests with an unknown access key id (refused before the body)", "unknown_key")):
        part = result[key]
        lines += [f"## {title}", "", "| server | n | median ms | p10 | p25 | p75 | p90 | mean |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, s in part["summary_ms"].items():
            lines.append(f"| {name} | {s['n']} | {s['median']:.3f} | {s['p10']:.3f} | {s['p25']:.3f} | "
                         f"{s['p75']:.3f} | {s['p90']:.3f} | {s['mean']:.3f} |")
        lines.append("")
        for label, d in part["block_median_difference_ms"].items():
            lines.append(f"- {label}, difference of block medians ({result['block']} requests each): median "
                         f"{d['median']:+.3f} ms (min {d['min']:+.3f}, max {d['max']:+.3f}; {d['blocks']} blocks)")
        lines.append("")
    lines += ["## The lookup alone, in process (µs per call; 1,000 keys in the store)", "",
              "| lookup | n | median µs | p10 | p90 | mean |", "|---|---|---|---|---|---|"]
    for name, s in result["in_process_us"].items():
        lines.append(f"| {name} | {s['n']} | {s['median']:.2f} | {s['p10']:.2f} | {s['p90']:.2f} | {s['mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("static", "store", "static2"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=1000, help="signed requests per server (default 1000)")
    parser.add_argument("--unknown", type=int, default=400, help="unknown-key requests per server (default 400)")
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=20000, help="in-process lookups per kind")
    parser.add_argument("--out", type=Path, default=RESULTS / "key_lookup.json")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.data_dir)
        return 0

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="faceaudit-keybench-") as tmp:
        root = Path(tmp)
        servers = {name: start(name, root) for name in ("static", "store", "static2")}
        try:
            clients = {name: client(url) for name, (_, url) in servers.items()}
            strangers = {name: client(url, "NOSUCHKEY00000000000") for name, (_, url) in servers.items()}
            for name in servers:
                timed(clients[name].list_collections, args.warmup)
                timed(strangers[name].list_collections, args.warmup)
                assert len(clients[name].list_collections()["CollectionIds"]) == 3
            listing = interleaved({n: c.list_collections for n, c in clients.items()}, args.requests, args.block)
            unknown = interleaved({n: c.list_collections for n, c in strangers.items()}, args.unknown, args.block)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)
        in_process = lookups_in_process(root, args.lookups)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "block": args.block, "warmup": args.warmup,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_start": [round(x, 2) for x in load_start],
                    "load_end": [round(x, 2) for x in os.getloadavg()]},
        "list_collections": listing, "unknown_key": unknown, "in_process_us": in_process}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
