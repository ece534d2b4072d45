"""Issue 8's image bombs, before vs after, in one run: time and peak RSS per request.

Each case runs in a fresh subprocess (so VmHWM is its own) against the code at
BEFORE_SRC (the original, commit 1663b30) and at this worktree's src, alternating.
Calls faceaudit.images.load_image directly (what every entry point runs); the burst
is eight threads at once. Writes benchmarks/results/image_bombs.md.

    python benchmarks/image_bombs.py [--before /work/main/src] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ["webp-lossless-bomb", "png-16bit-rgba", "png-truncated", "jpeg-patched",
         "burst-8-webp-bombs", "webp-at-limit", "jpeg-512"]

_CHILD = r'''
import io, json, sys, threading, time
sys.path.insert(0, sys.argv[2])
from support import bombs
from PIL import Image
from skimage import data as skdata
from faceaudit.images import load_image

def jpeg(img):
    b = io.BytesIO(); img.save(b, "JPEG", quality=90); return b.getvalue()

case = sys.argv[1]
ast = Image.fromarray(skdata.astronaut())
make = {"webp-lossless-bomb": bombs.webp_bomb, "png-16bit-rgba": bombs.png16_bomb,
        "png-truncated": bombs.truncated_png,
        "jpeg-patched": lambda: bombs.patched_jpeg(jpeg(ast)),
        "burst-8-webp-bombs": bombs.webp_bomb, "jpeg-512": lambda: jpeg(ast),
        "webp-at-limit": lambda: bombs.lossless_webp(6300, 6300)}[case]
data = make()
for warm in (jpeg(ast), bombs.lossless_webp(300, 300), bombs.png(300, 300, 8, 2, bombs.zero_stream(900, 300))):
    load_image(warm)  # imports and first-call costs (libwebp's is 0.3 s) out of the way
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
outcomes = []
def one():
    try:
        load_image(data); outcomes.append("accepted")
    except Exception as e:
        outcomes.append(type(e).__name__)
base = hwm()
start = time.perf_counter()
if case.startswith("burst"):
    threads = [threading.Thread(target=one) for _ in range(8)]
    [t.start() for t in threads]; [t.join() for t in threads]
else:
    one()
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": (hwm() - base) / 2**20,
                  "bytes": len(data), "outcome": sorted(set(outcomes))}))
'''


def run(case: str, src: str) -> dict:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", _CHILD, case, str(ROOT / "tests")], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        return {"seconds": float("nan"), "peak_mb": float("nan"), "bytes": 0,
                "outcome": [f"crashed: {out.stderr.strip().splitlines()[-1:]}"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def summary(values: list[float], floor: float | None = None) -> str:
    if floor is not None:  # VmHWM growth below 1 MB is the kernel's counting noise
        values = [floor if v < 1 else v for v in values]
    if len(values) == 1:
        return _number(values[0])
    return (f"{_number(statistics.median(values))} "
            f"[{_number(min(values))}-{_number(max(values))}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", default="/work/main/src")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "image_bombs.md"))
    args = parser.parse_args()
    versions = {"before": args.before, "after": str(ROOT / "src")}
    results: dict = {(c, v): [] for c in CASES for v in versions}
    for repeat in range(args.repeats):
        for case in CASES:
            if case.startswith("burst") and repeat:
                continue  # the "before" burst takes ~90 s and 9 GB: once is enough
            for name, src in versions.items():  # alternating: both see the same machine load
                results[case, name].append(run(case, src))
                print(case, name, results[case, name][-1], flush=True)
    lines = [
        "# Image bombs: before vs after (issue 8)", "",
        (f"`python benchmarks/image_bombs.py` -- before: `{args.before}` (commit 1663b30), after: "
         f"this branch's `src`; one fresh process per measurement, the two alternating; "
         f"n = {args.repeats} per cell (burst: n = 1), median [min-max]. Peak RSS: the process's "
         "VmHWM growth during the call(s) to `load_image` (under 1 MB shown as 0). 2-core machine shared with other "
         "work: times are noisy, ratios within a row are what to compare."), "",
        ("| case | input bytes | outcome before | outcome after | seconds before | seconds after "
         "| time ratio | peak MB before | peak MB after |"),
        "|---|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        b, a = results[case, "before"], results[case, "after"]
        tb = [r["seconds"] for r in b]
        ta = [r["seconds"] for r in a]
        ratio = statistics.median(tb) / max(statistics.median(ta), 1e-9)
        lines.append(
            f"| {case} | {a[0]['bytes']:,} | {', '.join(b[0]['outcome'])} | {', '.join(a[0]['outcome'])} "
            f"| {summary(tb)} | {summary(ta)} | {_number(ratio)}x | "
            f"{summary([r['peak_mb'] for r in b], 0)} | {summary([r['peak_mb'] for r in a], 0)} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
