"""Peak memory of a verification audit at the ACLU's scale, and of the fix that bounds it, in one run.

Two measurements, each under tracemalloc (peak of Python allocations, numpy's
included) with ru_maxrss (the process's peak resident set) alongside:

1. **The target's answers, before and after.** A verification audit reaches a
   Rekognition-like target through ``RekognitionTarget.similarities``: IndexFaces
   for every image, then SearchFaces (MaxFaces 4096) for each. Before the fix,
   ``_run_jobs`` kept every finished Future until the last one finished, so
   every SearchFaces answer (up to 4096 Face records each) stayed in memory at
   once: images x faces records, about 10 GB for 3,000 images. The same run is
   made with that behaviour (``RetainingTarget``, the old loop) and with the
   current code, over an in-process synthetic Rekognition (numpy vectors, full
   Rekognition Face shapes), on ``--target-images`` images.
2. **The whole verification protocol at 25,000 images** (``--images``), through a
   CSV target of synthetic similarities: identities of two photos drawn as in
   benchmarks/search.py's hard vectors (centres from a Gaussian, photos about
   0.3 apart), gender x race cells, impostors within cells (10 per genuine pair),
   2,000 bootstrap resamples. The bootstrap weighs pairs by per-image counts
   (faceaudit.stats._weighted_replicates) in bounded blocks: it never holds a
   resamples x pairs matrix, whose size is printed for comparison.

Writes benchmarks/results/audit_memory.json and prints a table.

    nice -n 10 .venv/bin/python benchmarks/audit_memory.py [--images 25000] [--target-images 1000]
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import Future, as_completed
from pathlib import Path

import numpy as np

from faceaudit.audit.pairs import make_pairs
from faceaudit.audit.protocols.verification import run_verification
from faceaudit.audit.targets.csv_predictions import CsvTarget
from faceaudit.audit.targets.progress import progress_bar
from faceaudit.audit.targets.rekognition import RekognitionTarget
from faceaudit.audit.targets.transport import ThreadBackend
from faceaudit.datasets.labelled import AuditDataset, AuditImage

RESULTS = Path(__file__).resolve().parent / "results" / "audit_memory.json"
GENDERS = ("female", "male")
RACES = ("asian", "black", "indian", "white", "others")


def synthetic_vectors(identities: int, photos: int, dim: int = 128, seed: int = 0,
                      spread: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors as hard as real faces: identity centres share a common direction (faces look
    alike) plus each identity's own part, of size ``spread`` (per identity; default 0.34, which puts
    different people about 0.57 apart), and each photo adds noise putting two photos of one person
    about 0.31 apart. A smaller spread makes a group whose strangers look alike (more false matches)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim)
    common /= np.linalg.norm(common)
    own = rng.normal(size=(identities, dim))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    spread = np.full(identities, 0.34) if spread is None else np.asarray(spread, dtype=np.float64)
    centres = np.sqrt(1 - spread**2)[:, None] * common + spread[:, None] * own
    noise = rng.normal(scale=0.22 / np.sqrt(dim), size=(identities, photos, dim))
    vectors = (centres[:, None, :] + noise).reshape(identities * photos, dim)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def similarity(distance: np.ndarray) -> np.ndarray:
    """0-100, falling steeply around distance 0.42 (as calibrated engine scales do): two photos of one
    person (about 0.30 apart) score about 98, strangers 0.45-0.6 apart 27 and below, the look-alike
    strangers of the tightest cell (down to 0.38) up to about 80."""
    return 100.0 / (1.0 + np.exp((np.asarray(distance) - 0.42) / 0.03))


def peak(function, *args):
    """(result, tracemalloc peak MB, seconds) of ``function(*args)``."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = function(*args)
        seconds = time.perf_counter() - start
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, top / 1e6, seconds


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- 1. the target's answers -------------------------------------------------------------------
class SyntheticRekognition:
    """CreateCollection / IndexFaces / SearchFaces / DeleteCollection over synthetic vectors, with
    Rekognition's response shapes (each image's bytes are ``img-<n>``; face n has vector n)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors
        self.indexed: dict[str, dict[int, str]] = {}  # collection -> face n -> its ExternalImageId

    @staticmethod
    def face(n: int) -> dict:
        return {"FaceId": f"{n:08d}-0000-4000-8000-000000000000", "ImageId": f"{n:08d}-1111-4000-8000-000000000000",
                "ExternalImageId": f"i{n}", "Confidence": 99.99,
                "BoundingBox": {"Width": 0.5, "Height": 0.6, "Left": 0.25, "Top": 0.2},
                "IndexFacesModelVersion": "synthetic"}

    def __call__(self, operation: str, request: dict) -> dict:
        if operation == "CreateCollection":
            self.indexed.setdefault(request["CollectionId"], {})
            return {"StatusCode": 200, "FaceModelVersion": "synthetic"}
        if operation == "DeleteCollection":
            self.indexed.pop(request["CollectionId"], None)
            return {"StatusCode": 200}
        if operation == "IndexFaces":
            n = int(request["Image"]["Bytes"].decode().split("-")[1])
            self.indexed[request["CollectionId"]][n] = request["ExternalImageId"]
            record = self.face(n)
            record["ExternalImageId"] = request["ExternalImageId"]
            return {"FaceRecords": [{"Face": record}], "UnindexedFaces": [], "FaceModelVersion": "synthetic"}
        if operation == "SearchFaces":
            external = self.indexed[request["CollectionId"]]
            members = np.fromiter(external, dtype=np.int64)
            n = int(request["FaceId"][:8])
            scores = similarity(np.linalg.norm(self.vectors[members] - self.vectors[n], axis=1))
            order = [int(i) for i in np.argsort(-scores, kind="stable") if members[i] != n][:request["MaxFaces"]]
            matches = []
            for i in order:
                record = self.face(int(members[i]))
                record["ExternalImageId"] = external[int(members[i])]
                matches.append({"Similarity": float(scores[i]), "Face": record})
            return {"SearchedFaceId": request["FaceId"], "FaceMatches": matches, "FaceModelVersion": "synthetic"}
        raise ValueError(operation)


class RetainingTarget(RekognitionTarget):
    """The target as it was before the fix: every finished Future (and its response) kept until
    all jobs of the call had finished."""

    def _run_jobs(self, jobs, description, done):
        if not jobs:
            return
        for job in jobs:
            self.calls[job.operation] += 1
        futures: dict[Future, int] = {}
        for i, job in enumerate(jobs):
            futures[self.backend.submit(job)] = i
        with progress_bar(self.progress, description, len(jobs)) as advance:
            for future in as_completed(futures):
                done(futures[future], future.result())
                advance()


def target_similarities(kind: type[RekognitionTarget], folder: Path, vectors: np.ndarray,
                        pairs: list[tuple[str, str]]) -> list:
    backend = ThreadBackend(lambda: SyntheticRekognition(vectors), endpoint="synthetic", threads=1)
    target = kind(backend, name="synthetic", progress=False)
    try:
        return target.similarities(pairs)
    finally:
        target.close()


def measure_target(images: int, seed: int) -> dict:
    vectors = synthetic_vectors(images // 2, 2, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for n in range(len(vectors)):
            path = folder / f"{n:06d}.img"
            path.write_bytes(f"img-{n}".encode())
            paths.append(str(path))
        pairs = [(paths[n], paths[n + 1]) for n in range(0, len(paths) - 1, 2)]  # one search per identity
        pairs += [(paths[n], paths[(n + 7) % len(paths)]) for n in range(0, len(paths), 2)]
        before, before_mb, before_s = peak(target_similarities, RetainingTarget, folder, vectors, pairs)
        after, after_mb, after_s = peak(target_similarities, RekognitionTarget, folder, vectors, pairs)
    assert before == after, "the fix must change no answer"
    return {"images": len(vectors), "pairs": len(pairs), "searches": len(paths) // 2,
            "before": {"tracemalloc_peak_mb": round(before_mb, 1), "seconds": round(before_s, 1)},
            "after": {"tracemalloc_peak_mb": round(after_mb, 1), "seconds": round(after_s, 1)},
            "ratio": round(before_mb / after_mb, 1)}


# --- 2. the protocol at 25,000 images -----------------------------------------------------------
def measure_protocol(images: int, seed: int) -> dict:
    identities = images // 2
    # The ten gender x race cells differ in how alike their strangers look (0.24-0.40), as real ones do.
    cell = np.arange(identities) % 10
    vectors = synthetic_vectors(identities, 2, seed=seed, spread=0.24 + 0.016 * cell)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = AuditDataset("synthetic", str(root), [
            AuditImage(path=str(root / f"{n:06d}.jpg"), identity=f"p{n // 2}", gender=GENDERS[(n // 2) % 10 // 5],
                       race=RACES[(n // 2) % 5]) for n in range(len(vectors))])
        pairs = make_pairs(dataset, impostors_per_genuine=10, seed=seed)
        index = {image.path: n for n, image in enumerate(dataset.images)}
        a = np.array([index[p.path_a] for p in pairs])
        b = np.array([index[p.path_b] for p in pairs])
        scores = similarity(np.linalg.norm(vectors[a] - vectors[b], axis=1))
        csv_path = root / "similarities.csv"
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path_a", "path_b", "similarity"])
            writer.writerows((p.path_a, p.path_b, f"{s:.4f}") for p, s in zip(pairs, scores))
        del a, b, scores
        target = CsvTarget(csv_path)
        report, peak_mb, seconds = peak(lambda: run_verification(dataset, target, pairs=pairs, seed=seed))
    parameters = report["parameters"]
    groups = len({tuple(sorted(row["group"].items())) for row in report["metrics"]})
    materialized_mb = parameters["resamples"] * len(pairs) * 8 / 1e6
    overall = [row for row in report["metrics"] if row["group"] == {}]
    return {"images": len(vectors), "pairs": len(pairs), "genuine_pairs": parameters["genuine_pairs"],
            "impostor_pairs": parameters["impostor_pairs"], "resamples": parameters["resamples"],
            "groups": groups, "tracemalloc_peak_mb": round(peak_mb, 1), "seconds": round(seconds, 1),
            "one_materialized_resample_matrix_mb": round(materialized_mb, 1),
            "threshold_at_target_fmr": parameters["threshold_at_target_fmr"],
            "overall": [{"metric": r["metric"], "threshold": r["threshold"], "k": r["k"], "n": r["n"],
                         "ci95": r["ci95"]} for r in overall],
            "gaps": [{"threshold": g["threshold"], "ratio": g["ratio"], "ratio_ci95": g["ratio_ci95"]}
                     for g in report["gaps"] if g["metric"] == "false_match_rate"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25_000, help="images of the protocol run (default 25,000)")
    parser.add_argument("--target-images", type=int, default=1_000,
                        help="images of the before/after target run (memory before grows as images^2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["target", "protocol"],
                        help="run one part (the other part's last result is kept in the results file)")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}

    if args.only == "protocol":
        target = previous["target"]
    else:
        target = measure_target(args.target_images, args.seed)
    print(f"target, {target['images']} images, {target['searches']} SearchFaces: before "
          f"{target['before']['tracemalloc_peak_mb']} MB, after {target['after']['tracemalloc_peak_mb']} MB "
          f"({target['ratio']}x)", flush=True)
    protocol = previous["protocol"] if args.only == "target" else measure_protocol(args.images, args.seed)
    print(f"verification protocol, {protocol['images']} images, {protocol['pairs']} pairs, "
          f"{protocol['resamples']} resamples, {protocol['groups']} groups: peak {protocol['tracemalloc_peak_mb']} MB "
          f"in {protocol['seconds']} s (one resamples x pairs matrix would be "
          f"{protocol['one_materialized_resample_matrix_mb']} MB)", flush=True)
    result = {"target": target, "protocol": protocol,
              "ru_maxrss_mb": {**previous.get("ru_maxrss_mb", {}), (args.only or "both"): round(maxrss_mb(), 1)}
              if isinstance(previous.get("ru_maxrss_mb"), dict) else {(args.only or "both"): round(maxrss_mb(), 1)},
              "python": sys.version.split()[0], "machine": platform.machine(),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"process peak RSS (ru_maxrss, whole run): {result['ru_maxrss_mb']} MB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
