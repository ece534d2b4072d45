"""What blind review adds to a search under a review policy: the ReviewStore calls, timed.

Each round, on one temporary data directory, interleaved so machine load falls on all
alike:

* ``keep_face_crops``: after IndexFaces, one faces-dev image and its one face's box
  (decode, crop, JPEG, AES-GCM seal, fsync, one SQLite transaction);
* ``open_item``: a public-safety search answered with 10 candidates (the probe and 10 crop
  copies sealed and fsynced, one transaction);
* ``blind_view``: a reviewer opening that item (11 pictures decrypted);
* ``seal`` / ``open``: one probe image alone, to separate the cipher and the disk from SQLite.

Reports the median and p95 per call with a bootstrap 95% interval of the median
(``--rounds`` rounds, default 200), the probe size, and the load average at start and end.

    nice -n 10 python benchmarks/review_store.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from faceaudit.access import AccessKey
from faceaudit.accountability.context import CASE_HEADER, PURPOSE_HEADER, Caller, Facts
from faceaudit.accountability.review import ReviewStore
from faceaudit.datasets import faces_dev
from faceaudit.stats import percentile_interval, rng_for

RESULTS = Path(__file__).resolve().parent / "results"
BOX = {"Left": 0.25, "Top": 0.2, "Width": 0.5, "Height": 0.6}
CANDIDATES = 10


def median_with_interval(samples_ms: list[float], seed: int, label: str) -> dict:
    values = np.asarray(samples_ms)
    rng = rng_for(seed, "median", label)
    replicates = np.median(rng.choice(values, size=(2000, len(values)), replace=True), axis=1)
    low, high = percentile_interval(replicates)
    return {"n": len(values), "median_ms": float(np.median(values)), "median_ci95_ms": [low, high],
            "p95_ms": float(np.percentile(values, 95))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", help="faces-dev (default: FACEAUDIT_TEST_DATA or ../shared/data/faces-dev)")
    args = parser.parse_args()
    root = faces_dev.locate(args.data)
    if root is None:
        parser.error("faces-dev not found; pass --data")
    images = sorted(p for p in (root / "images" / "lfw").rglob("*.jpg"))[:CANDIDATES + 1]
    pictures = [p.read_bytes() for p in images]
    probe = pictures[0]
    operator = AccessKey("AKBENCHOPERATOR00001", "bench-operator", "operator", None, datetime.now(UTC), "created")
    reviewer = AccessKey("AKBENCHREVIEWER00001", "bench-reviewer", "reviewer", None, datetime.now(UTC), "created")
    load_start = os.getloadavg()
    timings: dict[str, list[float]] = {"keep_face_crops": [], "open_item": [], "blind_view": [], "seal": [],
                                       "open": []}
    with tempfile.TemporaryDirectory() as tmp, ReviewStore(Path(tmp) / "data") as store:
        face_ids = [str(uuid.uuid4()) for _ in range(CANDIDATES)]
        for face_id, picture in zip(face_ids, pictures[1:]):
            store.keep_face_crops("bench", picture, [{"Face": {"FaceId": face_id, "BoundingBox": BOX}}])
        response = {"FaceMatches": [{"Similarity": 99.9 - i / 10, "Face": {"FaceId": f}}
                                    for i, f in enumerate(face_ids)]}
        for round_ in range(args.rounds):
            start = time.perf_counter()
            store.keep_face_crops("bench-index", pictures[round_ % len(pictures)],
                                  [{"Face": {"FaceId": str(uuid.uuid4()), "BoundingBox": BOX}}])
            timings["keep_face_crops"].append((time.perf_counter() - start) * 1000)
            caller = Caller(operator, str(uuid.uuid4()), datetime.now(UTC),
                            {PURPOSE_HEADER: "benchmark", CASE_HEADER: "B-1"})
            start = time.perf_counter()
            item = store.open_item(caller, "bench", "public-safety", probe, response, Facts())
            timings["open_item"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            store.blind_view(reviewer, item)
            timings["blind_view"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            blob = store.blobs.seal(probe)
            timings["seal"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            store.blobs.open(blob)
            timings["open"].append((time.perf_counter() - start) * 1000)
            store.blobs.delete(blob)
    result = {
        "what": "ReviewStore calls on a temporary data directory (faces-dev LFW images as probe and gallery)",
        "probe_bytes": len(probe), "candidates": CANDIDATES,
        "calls": {name: median_with_interval(samples, args.seed, name) for name, samples in timings.items()},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "cpus": os.cpu_count(), "platform": platform.platform(), "filesystem_of": tempfile.gettempdir(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "review_store.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
