"""Issue 8's attacks on ``faceaudit serve``, re-measured before and after the fixes in one run.

Each source tree (``--before`` and ``--after``, default the original main and this
checkout) gets its own real ``faceaudit serve`` process, started with an
open-file limit of 1024 (as the finding was made), and the same attacks from
raw sockets on this machine:

1. DeleteFaces with 3.3 million one-character FaceIds, correctly signed:
   server CPU seconds and peak-RSS growth (VmHWM) per call, wall time.
2. A legitimate signed ListCollections over a fresh connection: latency with
   no attack, while 1,100 silent connections are open, and while 500
   connections dribble one header line a second; plus how long those 500
   stay open (checked once a second, up to ``--slow-seconds``).
3. 64 connections that declare a 16 MiB body without any Authorization
   header and send all of it but the last byte: server RSS before, peak while
   they are held (sampled every 50 ms) and the answers they got.

Writes benchmarks/results/attacks.json and attacks.md, and prints the table.

    .venv/bin/python benchmarks/attacks.py [--before /work/main/src] [--after src]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/support/server.py: start_server, /proc readers

from support.server import (  # noqa: E402 (importable once tests/ is on the path)
    RunningServer,
    process_cpu_seconds,
    process_rss_bytes,
    start_server,
)

MiB = 1024 * 1024
JSON = "application/x-amz-json-1.1"
OPEN_FILES = 1024


# ------------------------------------------------------------------ raw HTTP


def _address(server: RunningServer) -> tuple[str, int]:
    parts = urlsplit(server.endpoint_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _signed_head(server: RunningServer, body: bytes, target: str) -> bytes:
    request = AWSRequest(method="POST", url=server.endpoint_url + "/", data=body,
                         headers={"Content-Type": JSON, "X-Amz-Target": target})
    SigV4Auth(Credentials(server.access_key_id, server.secret_access_key),
              "rekognition", "us-east-1").add_auth(request)
    headers = {**dict(request.headers.items()), "Host": urlsplit(server.endpoint_url).netloc,
               "Content-Length": str(len(body))}
    return _head(headers)


def _head(headers: dict[str, str]) -> bytes:
    lines = ["POST / HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _status(sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    """(status, raw response) of one response; status None on timeout or close without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(head.split()[1]), head + b"\r\n\r\n" + rest
    except (OSError, ValueError):
        return None, data


def _legit_latency(server: RunningServer, timeout: float = 10.0) -> float | None:
    """Seconds for a signed ListCollections on a fresh connection; None if it failed or timed out."""
    body = b"{}"
    head = _signed_head(server, body, "RekognitionService.ListCollections")
    started = time.perf_counter()
    try:
        with socket.create_connection(_address(server), timeout=timeout) as sock:
            sock.sendall(head + body)
            status, _ = _status(sock, max(0.1, timeout - (time.perf_counter() - started)))
    except OSError:
        return None
    elapsed = time.perf_counter() - started
    return elapsed if status == 200 else None


def _latencies(server: RunningServer, n: int, *, max_failures: int = 3) -> dict[str, Any]:
    values: list[float] = []
    failures = 0
    for _ in range(n):
        latency = _legit_latency(server)
        if latency is None:
            failures += 1
            if failures >= max_failures:
                break
        else:
            values.append(latency)
    return _summary(values) | {"attempts": len(values) + failures, "failed": failures}


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "median": statistics.median(ordered), "min": ordered[0],
            "max": ordered[-1],
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def _server_closed(sock: socket.socket) -> bool:
    """Whether the server has closed (or answered, which it does only to close) a connection."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) is not None  # b"" (closed) or a 408 sent before closing
    except BlockingIOError:
        return False
    except OSError:
        return True


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------ the attacks


def attack_delete_faces(server: RunningServer, runs: int) -> dict[str, Any]:
    body = ('{"CollectionId":"c","FaceIds":[' + ",".join(['"a"'] * 3_300_000) + "]}").encode()
    head = _signed_head(server, body, "RekognitionService.DeleteFaces")
    pid = server.process.pid
    cpu, hwm_growth, wall, answers = [], [], [], []
    for _ in range(runs):
        hwm_before, cpu_before = _vm(pid, "VmHWM"), process_cpu_seconds(pid)
        started = time.perf_counter()
        with socket.create_connection(_address(server), timeout=120) as sock:
            sock.sendall(head + body)
            status, raw = _status(sock, 120)
        wall.append(time.perf_counter() - started)
        time.sleep(0.2)  # the request's log line and any lingering work
        cpu.append(process_cpu_seconds(pid) - cpu_before)
        hwm_growth.append((_vm(pid, "VmHWM") - hwm_before) / MiB)
        answers.append(f"{status} {len(raw)} bytes")
    return {"body_bytes": len(body), "cpu_s": _summary(cpu), "peak_rss_growth_mib": _summary(hwm_growth),
            "wall_s": _summary(wall), "answers": answers,
            "note": "peak-RSS growth is VmHWM's rise; after the first run only a new peak shows"}


def attack_silent(server: RunningServer, count: int, n: int) -> dict[str, Any]:
    sockets: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(_address(server), timeout=5))
        except OSError:
            refused += 1
    time.sleep(0.5)
    result = _latencies(server, n)
    closed = 0
    for sock in sockets:
        closed += _server_closed(sock)
        sock.close()
    return {"connections": count, "connect_failed": refused, "closed_by_server_at_end": closed,
            "legit_latency_s": result}


def attack_slow_headers(server: RunningServer, count: int, seconds: int, n: int) -> dict[str, Any]:
    sockets = [socket.create_connection(_address(server), timeout=5) for _ in range(count)]
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    for sock in sockets:
        sock.sendall(b"POST / HTTP/1.1\r\n")
        sock.setblocking(False)
    stop = threading.Event()
    latencies: list[dict[str, Any]] = []

    def measure() -> None:
        time.sleep(2)  # while the dribble is on
        latencies.append(_latencies(server, n))

    thread = threading.Thread(target=measure)
    thread.start()
    for second in range(seconds):
        for i, sock in enumerate(sockets):
            if i in closed_at:
                continue
            if _server_closed(sock):
                closed_at[i] = time.monotonic() - opened
                continue
            try:
                sock.send(f"X-Slow-{second}: 1\r\n".encode())
            except OSError:
                closed_at[i] = time.monotonic() - opened
        if len(closed_at) == count and thread is not None and not thread.is_alive():
            break
        time.sleep(1)
    stop.set()
    thread.join()
    for sock in sockets:
        sock.close()
    return {"connections": count, "watched_s": seconds,
            "still_open_at_end": count - len(closed_at),
            "closed_within_1s": sum(t < 1.0 for t in closed_at.values()),
            "seconds_until_closed": _summary(list(closed_at.values())),
            "legit_latency_s": latencies[0] if latencies else None}


def attack_held_bodies(server: RunningServer, count: int, hold_s: float) -> dict[str, Any]:
    pid = server.process.pid
    before = process_rss_bytes(pid)
    head = _head({"Host": "x", "Content-Type": JSON, "X-Amz-Target": "RekognitionService.DetectFaces",
                  "Content-Length": str(16 * MiB)})
    chunk = b"A" * MiB
    answers: list[str] = []
    lock = threading.Lock()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, process_rss_bytes(pid))
            except (OSError, RuntimeError):
                return
            time.sleep(0.05)

    def attacker() -> socket.socket | None:
        sock = socket.create_connection(_address(server), timeout=30)
        try:
            sock.sendall(head)
            for _ in range(15):
                sock.sendall(chunk)
            sock.sendall(chunk[:-1])  # all but the last byte, then hold
            with lock:
                answers.append("held: the whole body but one byte was sent")
            return sock
        except OSError as error:
            status, _ = _status(sock, 1)
            with lock:
                answers.append(f"answered {status} early ({type(error).__name__})")
            sock.close()
            return None

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        held = [s for s in pool.map(lambda _: attacker(), range(count)) if s is not None]
    sent_s = time.monotonic() - started
    time.sleep(hold_s)
    done.set()
    sampler.join()
    for sock in held:
        sock.close()
    kinds: dict[str, int] = {}
    for answer in answers:
        kinds[answer] = kinds.get(answer, 0) + 1
    return {"connections": count, "declared_bytes": 16 * MiB, "rss_before_mib": before / MiB,
            "rss_peak_mib": peak / MiB, "growth_mib": (peak - before) / MiB,
            "seconds_to_send": sent_s, "outcomes": kinds}


# ------------------------------------------------------------------ driver


def run_version(label: str, src: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        server = start_server(work / label / "data", open_files=OPEN_FILES)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    out: dict[str, Any] = {"src": str(src)}
    try:
        print(f"[{label}] warm-up and baseline latency", flush=True)
        _legit_latency(server)
        out["baseline_latency_s"] = _latencies(server, args.n)
        print(f"[{label}] DeleteFaces with 3.3M ids", flush=True)
        out["delete_faces"] = attack_delete_faces(server, args.delete_runs_before if label == "before"
                                                  else args.delete_runs_after)
        print(f"[{label}] 1100 silent connections", flush=True)
        out["silent"] = attack_silent(server, 1100, args.n)
        time.sleep(1)
        print(f"[{label}] 500 slow-header connections", flush=True)
        out["slow_headers"] = attack_slow_headers(server, 500, args.slow_seconds, args.n)
        time.sleep(1)
        print(f"[{label}] 64 unauthenticated 16 MiB bodies", flush=True)
        out["held_bodies"] = attack_held_bodies(server, 64, 2.0)
    finally:
        server.stop(timeout=20)
    return out


def _fmt_latency(summary: dict[str, Any]) -> str:
    if not summary or summary.get("n", 0) == 0:
        tried = summary.get("attempts", "?") if summary else "?"
        return f"all {tried} failed (10 s timeout)"
    failed = summary.get("failed", 0)
    text = (f"median {summary['median'] * 1000:.1f} ms (range {summary['min'] * 1000:.1f}-"
            f"{summary['max'] * 1000:.1f}, n={summary['n']})")
    return text + (f", {failed} of {summary['attempts']} failed" if failed else "")


def _fmt_range(summary: dict[str, Any], unit: str, digits: int = 2) -> str:
    if summary.get("n", 0) == 0:
        return "-"
    return (f"median {summary['median']:.{digits}f} {unit} (range {summary['min']:.{digits}f}-"
            f"{summary['max']:.{digits}f}, n={summary['n']})")


def markdown(results: dict[str, Any]) -> str:
    b, a = results["versions"]["before"], results["versions"]["after"]
    rows = [
        ("64 unauthenticated 16 MiB bodies held: server RSS before -> peak (n=1 run)",
         *(f"{v['held_bodies']['rss_before_mib']:.0f} -> {v['held_bodies']['rss_peak_mib']:.0f} MiB "
           f"(+{v['held_bodies']['growth_mib']:.0f})" for v in (b, a))),
        ("  what the 64 connections got",
         *("; ".join(f"{k}: {c}" for k, c in v["held_bodies"]["outcomes"].items()) for v in (b, a))),
        ("signed ListCollections, fresh connection, no attack",
         *(_fmt_latency(v["baseline_latency_s"]) for v in (b, a))),
        ("  ... while 1,100 silent connections are open (open-file limit 1024)",
         *(_fmt_latency(v["silent"]["legit_latency_s"]) for v in (b, a))),
        ("  silent connections closed by the server by then",
         *(f"{v['silent']['closed_by_server_at_end']} of {v['silent']['connections']} "
           f"({v['silent']['connect_failed']} connects failed)" for v in (b, a))),
        ("  ... while 500 connections send a header line a second",
         *(_fmt_latency(v["slow_headers"]["legit_latency_s"] or {}) for v in (b, a))),
        ("  slow-header connections still open after the watch",
         *(f"{v['slow_headers']['still_open_at_end']} of 500 after {v['slow_headers']['watched_s']} s; "
           f"closed after {_fmt_range(v['slow_headers']['seconds_until_closed'], 's', 0)}; "
           f"{v['slow_headers']['closed_within_1s']} within 1 s (over the connection cap)"
           for v in (b, a))),
        ("DeleteFaces, 3.3M FaceIds (13.2 MB): server CPU",
         *(_fmt_range(v["delete_faces"]["cpu_s"], "s") for v in (b, a))),
        ("  peak-RSS growth (VmHWM)",
         *(_fmt_range(v["delete_faces"]["peak_rss_growth_mib"], "MiB", 0) for v in (b, a))),
        ("  wall time", *(_fmt_range(v["delete_faces"]["wall_s"], "s") for v in (b, a))),
    ]
    lines = [
        "# Issue 8's attacks, before and after (one run)",
        "",
        (f"Run {results['started']} on {results['machine']} ({results['cpus']} CPUs, shared; "
        f"load average {results['load_start']} at start, {results['load_end']} at end). "
        f"before = `{b['src']}`, after = `{a['src']}`; each a real `faceaudit serve` with an "
        f"open-file limit of {OPEN_FILES}, attacked from raw sockets on the same machine by "
        "`benchmarks/attacks.py`. Latencies: a signed ListCollections on a fresh connection, "
        "10 s timeout; a run of latencies stops after 3 failures. Slow-header closes are seen "
        "with 1 s granularity."),
        "",
        "| measure | before | after |",
        "|---|---|---|",
        *(f"| {m} | {x} | {y} |" for m, x, y in rows),
        "",
        "Raw figures: attacks.json.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=Path("/work/main/src"))
    parser.add_argument("--after", type=Path, default=REPO / "src")
    parser.add_argument("--n", type=int, default=20, help="legitimate requests per condition")
    parser.add_argument("--delete-runs-before", type=int, default=2)
    parser.add_argument("--delete-runs-after", type=int, default=5)
    parser.add_argument("--slow-seconds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "versions": {},
    }
    with tempfile.TemporaryDirectory(prefix="faceaudit-attacks-") as tmp:
        for label, src in (("before", args.before), ("after", args.after)):
            results["versions"][label] = run_version(label, src.resolve(), args, Path(tmp))
    results["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attacks.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.out / "attacks.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
