"""What the accountability guard adds to a request, measured side by side in one process.

The same SearchFaces request (by FaceId: no image decoding or embedding, so the guard's own
work is not lost in the engine's) on one EmbeddedStore with one indexed face, called as:

* ``bare``: RekognitionService.call (no guard: what the server did before);
* ``guarded``: GuardedService.call on an untagged collection (policy lookup + moratorium
  lookup: two indexed reads of accountability.db);
* ``budgeted``: the guard's budget step alone, ``AccountabilityState.admit_search`` (one
  BEGIN IMMEDIATE write with synchronous=FULL: what every public-safety search adds; the
  rest of a public-safety search goes to review and is not comparable).

Interleaved in blocks of ``--block`` calls each, the order alternating, after a warm-up;
reports each variant's median, p10 and p90 (per call, ms), and the per-block difference of
medians guarded - bare (its median and range across blocks).

Writes benchmarks/results/guard_overhead.json and guard_overhead.md.

    nice -n 10 .venv/bin/python benchmarks/guard_overhead.py [--calls 2000] [--block 100]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant")
    parser.add_argument("--block", type=int, default=100)
    args = parser.parse_args()

    from PIL import Image
    from skimage import data as skdata

    from faceaudit.access.keys import AccessKey
    from faceaudit.accountability.context import Caller, Facts
    from faceaudit.accountability.guard import GuardedService
    from faceaudit.accountability.state import AccountabilityState
    from faceaudit.rekognition.service import RekognitionService
    from faceaudit.runtime import default_engine
    from faceaudit.storage import EmbeddedStore

    buffer = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buffer, "JPEG", quality=92)
    with tempfile.TemporaryDirectory() as tmp:
        store, state = EmbeddedStore(tmp), AccountabilityState(tmp)
        service = RekognitionService(default_engine(), store)
        guard = GuardedService(service, state)
        service.call("CreateCollection", {"CollectionId": "bench"})
        face_id = service.call("IndexFaces", {"CollectionId": "bench", "Image": {"Bytes": buffer.getvalue()}}
                               )["FaceRecords"][0]["Face"]["FaceId"]
        request = {"CollectionId": "bench", "FaceId": face_id, "FaceMatchThreshold": 99.0}
        key = AccessKey("BENCHKEY000000000001", "bench", "operator", None, datetime.now(UTC), "created")

        def bare() -> None:
            service.call("SearchFaces", request)

        def guarded() -> None:
            guard.call(Caller(key, "r", datetime.now(UTC), {}), "SearchFaces", request, Facts())

        counter = iter(range(10**9))

        def budgeted() -> None:  # a fresh key name each call: never refused, always one write
            state.admit_search(f"k{next(counter)}", "public-safety", datetime.now(UTC), daily_limit=100,
                               window_s=60, window_limit=6)

        variants = {"bare": bare, "guarded": guarded, "budgeted": budgeted}
        for run in variants.values():  # warm-up
            for _ in range(50):
                run()
        times: dict[str, list[float]] = {name: [] for name in variants}
        differences = []
        order = list(variants)
        blocks = max(1, args.calls // args.block)
        for b in range(blocks):
            medians = {}
            for name in (order if b % 2 == 0 else order[::-1]):
                block = []
                for _ in range(args.block):
                    started = time.perf_counter()
                    variants[name]()
                    block.append((time.perf_counter() - started) * 1000)
                times[name].extend(block)
                medians[name] = float(np.median(block))
            differences.append(medians["guarded"] - medians["bare"])
        store.close()
        state.close()

    summary = {name: {"n": len(v), "median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                      "p90_ms": float(np.percentile(v, 90))} for name, v in times.items()}
    result = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "calls": args.calls,
              "block": args.block, "variants": summary,
              "guarded_minus_bare_per_block_ms": {"blocks": len(differences),
                                                  "median": float(np.median(differences)),
                                                  "min": float(np.min(differences)), "max": float(np.max(differences))}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "guard_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# What the accountability guard adds (benchmarks/guard_overhead.py)", "",
             f"{result['created']}, {result['cpus']} CPUs, load average {result['load_average'][0]:.1f}; "
             f"SearchFaces by FaceId on a one-face collection, {args.calls} calls per variant in blocks of "
             f"{args.block}, interleaved.", "",
             "| variant | n | median ms | p10 | p90 |", "|---|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['n']} | {s['median_ms']:.3f} | {s['p10_ms']:.3f} | {s['p90_ms']:.3f} |")
    d = result["guarded_minus_bare_per_block_ms"]
    lines += ["", f"guarded - bare, per block: median {d['median']:+.3f} ms (range {d['min']:+.3f} to "
              f"{d['max']:+.3f}, {d['blocks']} blocks)."]
    (RESULTS / "guard_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
