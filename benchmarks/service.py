"""End-to-end service benchmark: boto3 against a real ``faceaudit serve`` over HTTP.

Unlike ``search_latency.py`` (the store alone, in process, random vectors), every
figure here is a wall-clock time seen by an unmodified boto3 Rekognition client
talking to a ``faceaudit serve`` process on this machine (client and server
share its cores). Measured:

1. SearchFacesByImage latency (p50/p95) against collections of 10,000 and
   100,000 faces, next to the same probe image's DetectFaces and its
   SearchFacesByImage against a collection of only the real faces (~500): the
   differences show what detection, embedding and the search itself cost. Also
   the first search of each collection after the server starts (index load).
   The collections are written straight into the server's data dir with
   EmbeddedStore before it starts: real embeddings of ~500 faces-dev images plus
   synthetic vectors "around" them, renormalised to a norm drawn from the real
   vectors' norms. Default noise model (``--noise covariance``): the real vector
   pulled towards the mean plus Gaussian noise with the real vectors' covariance,
   so a probe meets synthetic faces at real impostor distances; the median
   distance of a synthetic vector from its source is ``--target-distance``
   (0.65). A 100,000-face collection with plain isotropic noise (real + N(0, σ²I),
   which drifts away from every probe, so fewer matches come back) is measured
   too. The distance distributions are printed and saved.
2. IndexFaces throughput on 200 UTKFace images with 1 and with 4 client
   threads (each its own boto3 client), against ``serve --workers 1`` and
   ``--workers 2``, in A-B-B-A rounds within one run.

Writes benchmarks/results/service.json (raw summaries, machine info, load
averages) and benchmarks/results/service.md (tables), and prints the tables.

    .venv/bin/python benchmarks/service.py [--probes 80] [--sizes 10000 100000] [--rounds 2]

faces-dev is research-only data: it is read where it lies; only numbers are written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/support/server.py: start_server, RunningServer

from faceaudit.datasets import faces_dev  # noqa: E402
from faceaudit.engine.batch import analyze_files  # noqa: E402
from faceaudit.runtime import engine_spec  # noqa: E402
from faceaudit.settings import Settings  # noqa: E402
from faceaudit.storage import EmbeddedStore, StoredFace  # noqa: E402
from support.server import start_server  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
ENGINE = Settings.from_env().engine  # what analyze_files embeds with and what the servers run
MODEL_VERSION = engine_spec(ENGINE).model_version  # collections written here must carry it
BOX = {"Width": 0.5, "Height": 0.6, "Left": 0.25, "Top": 0.2}
console = Console()
if not console.is_terminal:
    console = Console(width=150)


# -- small helpers ---------------------------------------------------------------------------

def summary(samples_s) -> dict:
    ms = np.asarray(samples_s, dtype=float) * 1000.0
    if ms.size == 0:
        return {"n": 0}
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "mean_ms": round(float(ms.mean()), 1),
            "min_ms": round(float(ms.min()), 1), "max_ms": round(float(ms.max()), 1)}


def dist_summary(d) -> dict:
    d = np.asarray(d, dtype=float)
    return {"n": int(d.size), **{f"p{q}": round(float(np.percentile(d, q)), 3) for q in (5, 25, 50, 75, 95)}}


def fmt_dist(d: dict) -> str:
    return "  ".join(f"p{q} {d[f'p{q}']:.3f}" for q in (5, 25, 50, 75, 95)) + f"  (n={d['n']})"


_CLK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except OSError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def tree_cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process and its live descendants (the server's workers)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / _CLK


def tree_rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


_LOG_MS = re.compile(r" ms=([0-9.]+) request_id=(\S+)$")


def server_ms(server, request_ids, timeout: float = 5.0) -> list[float]:
    """The server's own time (ms, from its request log) for these requests: read body, handle, send."""
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for line in server.log().splitlines():
            m = _LOG_MS.search(line)
            if m and m.group(2) in wanted:
                found[m.group(2)] = float(m.group(1))
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return [found[r] / 1000.0 for r in request_ids if r in found]
        time.sleep(0.05)


def rid(response) -> str:
    return response["ResponseMetadata"]["RequestId"]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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
    for name in ("faceaudit", "boto3", "botocore", "uvicorn", "numpy", "dlib-bin", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "platform": platform.platform(), "python": platform.python_version(), "packages": versions}


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


# -- images ----------------------------------------------------------------------------------

def every_kth(items: list, n: int) -> list:
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def choose_images(labels, n_index: int, n_probes: int, n_throughput: int):
    """Indexed, probe and IndexFaces image sets: disjoint, stratified by path order.

    Half the probes (at most) are LFW photos of people who have another photo in
    the indexed set, so some searches find a true match; the rest are people
    never indexed.
    """
    labels = sorted(labels, key=lambda lab: lab.path)
    indexed = every_kth(labels, n_index)
    taken = {lab.path for lab in indexed}
    indexed_people = {lab.identity for lab in indexed if lab.identity}
    genuine = [lab for lab in labels if lab.identity in indexed_people and lab.path not in taken]
    probes = every_kth(genuine, n_probes // 2)
    taken |= {lab.path for lab in probes}
    rest = [lab for lab in labels if lab.path not in taken]
    probes += every_kth(rest, n_probes - len(probes))
    taken |= {lab.path for lab in probes}
    utk = [lab for lab in labels if lab.source.startswith("UTKFace") and lab.path not in taken]
    throughput = every_kth(utk, n_throughput)
    return indexed, probes, throughput


# -- synthetic vectors -----------------------------------------------------------------------

class Synthetic:
    """Synthetic face vectors "around" real ones, renormalised to a norm drawn from the real norms.

    ``covariance`` (default): v = mu + rho (x - mu) + sqrt(1 - rho^2) N(0, S), with x a real
    vector, mu and S the real vectors' mean and covariance. The real vector pulled a little
    towards the mean plus Gaussian noise shaped like the real spread: v stays where faces
    live, so a probe (another person) sits at a real impostor distance from it.
    ``isotropic``: v = x + N(0, sigma^2 I). The noise leaves the subspace the embeddings
    occupy, so synthetic vectors are farther from every probe than real faces are (a probe
    almost never matches one): fewer matches, smaller responses than a real gallery.
    The parameter (rho or sigma) is set so that the median distance to the source is
    ``target``.
    """

    def __init__(self, real: np.ndarray, kind: str, target: float):
        self.real = real.astype(np.float64)
        self.norms = np.linalg.norm(self.real, axis=1)
        self.kind = kind
        self.mu = self.real.mean(axis=0)
        cov = np.cov(self.real.T) + 1e-8 * np.eye(self.real.shape[1])
        self.chol = np.linalg.cholesky(cov)
        self.param = self._calibrate(target)

    def sample(self, n: int, rng, param: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        p = self.param if param is None else param
        src = rng.integers(0, len(self.real), size=n)
        z = rng.standard_normal((n, self.real.shape[1]))
        x = self.real[src]
        if self.kind == "isotropic":
            v = x + p * z
        else:
            v = self.mu + p * (x - self.mu) + np.sqrt(max(0.0, 1.0 - p * p)) * (z @ self.chol.T)
        v *= (rng.choice(self.norms, size=n) / np.linalg.norm(v, axis=1))[:, None]
        return v.astype(np.float32), src

    def _median_to_source(self, param: float) -> float:
        v, src = self.sample(4000, np.random.default_rng(1), param)
        return float(np.median(np.linalg.norm(v - self.real[src], axis=1)))

    def _calibrate(self, target: float) -> float:
        lo, hi = 0.0, 1.0  # sigma (distance grows with it) or rho (distance shrinks with it)
        grows = self.kind == "isotropic"
        for _ in range(40):
            mid = (lo + hi) / 2
            if (self._median_to_source(mid) < target) == grows:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def describe(self) -> str:
        if self.kind == "isotropic":
            return f"real + N(0, σ²I), σ = {self.param:.4f} per dimension"
        return f"μ + ρ(real − μ) + √(1−ρ²)·N(0, Σ_real), ρ = {self.param:.3f}"


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sqrt(np.maximum((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0))


def distance_report(gen: Synthetic, real_ids, probes, probe_ids, threshold: float, rng) -> dict:
    """Where synthetic vectors sit, next to the real distances they imitate."""
    real = gen.real
    v, src = gen.sample(20000, rng)
    d = pairwise(v[:2000], real)
    d[np.arange(2000), src[:2000]] = np.inf
    i, j = np.triu_indices(len(real), 1)
    same = (real_ids[i] == real_ids[j]) & (real_ids[i] != "")
    d_real = np.linalg.norm(real[i] - real[j], axis=1)
    rr = pairwise(real, real)
    np.fill_diagonal(rr, np.inf)
    to_real = pairwise(probes, real)
    genuine = (probe_ids[:, None] == real_ids[None, :]) & (probe_ids[:, None] != "")
    to_syn = pairwise(probes, v)
    out = {"synthetic_to_source": dist_summary(np.linalg.norm(v - real[src], axis=1)),
           "synthetic_to_nearest_other_real": dist_summary(d.min(axis=1)),
           "real_to_nearest_other_real": dist_summary(rr.min(axis=1)),
           "real_impostor_pairs": dist_summary(d_real[~same]),
           "probe_to_real_impostors": dist_summary(to_real[~genuine]),
           "probe_to_real_genuine_lfw": dist_summary(to_real[genuine]) if genuine.any() else {"n": 0},
           "probe_to_synthetic": dist_summary(to_syn),
           "real_norms": dist_summary(gen.norms)}
    out["match_rate_at_threshold"] = {
        "threshold_distance": round(threshold, 4),
        "probe_vs_real_impostor": round(float((to_real[~genuine] < threshold).mean()), 5),
        "probe_vs_synthetic": round(float((to_syn < threshold).mean()), 5)}
    return out


def stored(vectors: np.ndarray, prefix: str, start: int) -> list[StoredFace]:
    return [StoredFace(str(uuid.uuid4()), str(uuid.uuid4()), f"{prefix}-{start + k}", BOX, 99.9,
                       MODEL_VERSION, None, v) for k, v in enumerate(vectors)]


def build_collections(data_dir: Path, gens: dict[str, Synthetic], plan: dict[str, tuple[int, str | None]],
                      rng) -> dict:
    """plan: {collection: (size, generator name or None for real vectors only)}."""
    store = EmbeddedStore(data_dir, synchronous="NORMAL")
    built = {}
    real = next(iter(gens.values())).real.astype(np.float32)
    with progress() as bar:
        for name, (size, kind) in plan.items():
            t0 = time.perf_counter()
            store.create_collection(name, MODEL_VERSION)
            base = real[:size]
            store.add_faces(name, stored(base, "real", 0))
            task = bar.add_task(f"building {name}", total=size)
            bar.advance(task, len(base))
            done = len(base)
            while done < size:
                n = min(5000, size - done)
                v, _ = gens[kind].sample(n, rng)
                store.add_faces(name, stored(v, "syn", done))
                done += n
                bar.advance(task, n)
            built[name] = {"faces": store.describe_collection(name).face_count, "real_faces": len(base),
                           "synthetic": kind, "build_s": round(time.perf_counter() - t0, 1)}
    store.close()
    return built


# -- part 1: search latency ------------------------------------------------------------------

def search_latency(data_dir: Path, probes: list[bytes], warm: list[bytes], collections: list[str],
                   n_warmup: int) -> dict:
    t0 = time.perf_counter()
    server = start_server(data_dir)
    startup_s = time.perf_counter() - t0
    pid = server.process.pid
    out: dict = {"server": "faceaudit serve --workers 1 (default --threads 8)",
                 "startup_to_listening_s": round(startup_s, 2), "rss_mb_after_start": tree_rss_mb(pid)}
    try:
        client = server.client()
        t = time.perf_counter()
        client.detect_faces(Image={"Bytes": warm[0]})
        out["first_request_after_start_ms_detectfaces"] = round((time.perf_counter() - t) * 1000, 1)
        for img in warm[1:]:
            client.detect_faces(Image={"Bytes": img})
        for img in warm:  # every code path of a search, on a 20-face collection
            client.search_faces_by_image(CollectionId="warmup", Image={"Bytes": img})

        # first search of each collection after start: loads its index into the server's memory
        first = {}
        for name in collections:
            c0, t = tree_cpu_s(pid), time.perf_counter()
            ids = [rid(client.search_faces_by_image(CollectionId=name, Image={"Bytes": warm[0]}))]
            first_s, first_cpu = time.perf_counter() - t, tree_cpu_s(pid) - c0
            again, again_cpu = [], []
            for _ in range(3):
                c0, t = tree_cpu_s(pid), time.perf_counter()
                ids.append(rid(client.search_faces_by_image(CollectionId=name, Image={"Bytes": warm[0]})))
                again.append(time.perf_counter() - t)
                again_cpu.append(tree_cpu_s(pid) - c0)
            srv = server_ms(server, ids)
            first[name] = {"first_search_ms": round(first_s * 1000, 1),
                           "same_image_again_ms": round(float(np.median(again)) * 1000, 1),
                           "index_load_estimate_ms": round((first_s - float(np.median(again))) * 1000, 1),
                           "server_ms_first": round(srv[0] * 1000, 1) if srv else None,
                           "server_ms_again": round(float(np.median(srv[1:])) * 1000, 1) if len(srv) > 1 else None,
                           "server_cpu_ms_first": round(first_cpu * 1000),
                           "server_cpu_ms_again": round(float(np.median(again_cpu)) * 1000),
                           "server_rss_mb_after": tree_rss_mb(pid)}
        out["first_search_after_start"] = first

        ops = [("DetectFaces", None)] + [("SearchFacesByImage", name) for name in collections]
        with progress() as bar:
            task = bar.add_task("warm-up", total=n_warmup * len(ops))
            for k in range(n_warmup):
                for _op, name in ops:
                    img = warm[k % len(warm)]
                    if name is None:
                        client.detect_faces(Image={"Bytes": img})
                    else:
                        client.search_faces_by_image(CollectionId=name, Image={"Bytes": img})
                    bar.advance(task)
            wall = {key: [] for key in ops}
            ids = {key: [] for key in ops}
            cpu = dict.fromkeys(ops, 0.0)
            matches = {name: [] for name in collections}
            top_similarity = {name: [] for name in collections}
            task = bar.add_task(f"probes x {len(ops)} calls", total=len(probes) * len(ops))
            for k, img in enumerate(probes):
                order = ops[k % len(ops):] + ops[:k % len(ops)]  # rotate: drift falls on all alike
                for op, name in order:
                    c0 = tree_cpu_s(pid)
                    t = time.perf_counter()
                    if name is None:
                        r = client.detect_faces(Image={"Bytes": img})
                    else:
                        r = client.search_faces_by_image(CollectionId=name, Image={"Bytes": img})
                    wall[(op, name)].append(time.perf_counter() - t)
                    ids[(op, name)].append(rid(r))
                    cpu[(op, name)] += tree_cpu_s(pid) - c0
                    if name is not None:
                        matches[name].append(len(r["FaceMatches"]))
                        if r["FaceMatches"]:
                            top_similarity[name].append(r["FaceMatches"][0]["Similarity"])
                    bar.advance(task)
        rows = []
        for (op, name), samples in wall.items():
            srv = summary(server_ms(server, ids[(op, name)]))
            row = {"operation": op, "collection": name, **summary(samples),
                   "server_ms_p50": srv.get("p50_ms"), "server_ms_p95": srv.get("p95_ms"),
                   "server_cpu_ms_per_call": round(cpu[(op, name)] / len(samples) * 1000, 1)}
            if name is not None:
                m = np.asarray(matches[name])
                row.update({"probes_with_a_match": int((m > 0).sum()),
                            "mean_matches_returned": round(float(m.mean()), 2)})
            rows.append(row)
        out["latency"] = rows
        # per probe, server ms of a search minus the same probe's search of real-only: the search's own cost
        base = server_ms(server, ids[("SearchFacesByImage", "real-only")])
        paired = {}
        for name in collections[1:]:
            other = server_ms(server, ids[("SearchFacesByImage", name)])
            if len(other) == len(base):
                diff = (np.asarray(other) - np.asarray(base)) * 1000.0
                boot = np.random.default_rng(0).choice(diff, size=(2000, len(diff))).mean(axis=1)
                paired[name] = {"median_ms": round(float(np.median(diff)), 2),
                                "mean_ms": round(float(diff.mean()), 2),
                                "mean_95ci_ms": [round(float(np.percentile(boot, 2.5)), 2),
                                                 round(float(np.percentile(boot, 97.5)), 2)]}
        out["paired_server_ms_minus_real_only"] = paired
        out["rss_mb_at_end"] = tree_rss_mb(pid)
    finally:
        server.stop()
    return out


# -- part 2: IndexFaces throughput -----------------------------------------------------------

def index_run(server, collection: str, images: list[bytes], threads: int, bar, task) -> dict:
    server.client().create_collection(CollectionId=collection)
    clients = [server.client(max_pool_connections=2) for _ in range(threads)]  # one per thread
    work: queue.Queue = queue.Queue()
    for k, img in enumerate(images):
        work.put((k, img))
    lat, faces, errors, lock = [], [0], [], threading.Lock()

    def worker(client):
        while True:
            try:
                k, img = work.get_nowait()
            except queue.Empty:
                return
            t = time.perf_counter()
            try:
                r = client.index_faces(CollectionId=collection, Image={"Bytes": img},
                                       ExternalImageId=f"img-{k}")
                n = len(r["FaceRecords"])
                err = None
            except Exception as error:  # any failure: counted and reported
                n, err = 0, type(error).__name__
            elapsed = time.perf_counter() - t
            with lock:
                lat.append(elapsed)
                faces[0] += n
                if err:
                    errors.append(err)
            bar.advance(task)

    pool = [threading.Thread(target=worker, args=(c,)) for c in clients]
    c0, p0, t0 = tree_cpu_s(server.process.pid), time.process_time(), time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    wall = time.perf_counter() - t0
    server_cpu = tree_cpu_s(server.process.pid) - c0
    client_cpu = time.process_time() - p0
    return {"images": len(images), "faces_indexed": faces[0], "errors": len(errors),
            "wall_s": round(wall, 2), "images_per_s": round(len(images) / wall, 2),
            "faces_per_s": round(faces[0] / wall, 2), "request_latency": summary(lat),
            "server_cpu_s": round(server_cpu, 2), "server_cores_used": round(server_cpu / wall, 2),
            "client_cpu_s": round(client_cpu, 2), "load_1min_after": load()[0]}


def index_throughput(workdir: Path, images: list[bytes], warm: list[bytes], workers_list, threads_list,
                     rounds: int) -> dict:
    configs = [(w, t) for w in workers_list for t in threads_list]
    runs: dict = {f"w{w}-t{t}": [] for w, t in configs}
    with progress() as bar:
        for r in range(rounds):
            by_workers = workers_list if r % 2 == 0 else list(reversed(workers_list))  # A-B-B-A
            for w in by_workers:
                server = start_server(workdir / f"index-r{r}-w{w}", extra_args=("--workers", str(w)))
                try:
                    # warm every worker process: concurrent IndexFaces into a scratch collection
                    server.client().create_collection(CollectionId="warmup")
                    wclients = [server.client() for _ in range(4)]
                    ths = [threading.Thread(target=lambda c=c: [c.index_faces(CollectionId="warmup",
                                                                              Image={"Bytes": img})
                                                                for img in warm[:3]]) for c in wclients]
                    for th in ths:
                        th.start()
                    for th in ths:
                        th.join()
                    ts = threads_list if r % 2 == 0 else list(reversed(threads_list))
                    for t in ts:
                        task = bar.add_task(f"round {r + 1}: IndexFaces --workers {w}, {t} client thread(s)",
                                            total=len(images))
                        result = index_run(server, f"tp-{t}", images, t, bar, task)
                        result["round"] = r + 1
                        runs[f"w{w}-t{t}"].append(result)
                finally:
                    server.stop()
    table = []
    for w, t in configs:
        rs = runs[f"w{w}-t{t}"]
        table.append({"workers": w, "client_threads": t,
                      "images_per_s_median": round(float(np.median([x["images_per_s"] for x in rs])), 2),
                      "faces_per_s_median": round(float(np.median([x["faces_per_s"] for x in rs])), 2),
                      "request_p50_ms_median": round(float(np.median([x["request_latency"]["p50_ms"] for x in rs])), 1),
                      "server_cores_used_median": round(float(np.median([x["server_cores_used"] for x in rs])), 2),
                      "faces_indexed": [x["faces_indexed"] for x in rs], "errors": sum(x["errors"] for x in rs)})
    base = table[0]["faces_per_s_median"]
    for row in table:
        row["ratio_vs_w1_t1"] = round(row["faces_per_s_median"] / base, 2) if base else None
    return {"rounds": rounds, "runs": runs, "summary": table}


# -- part 3: IndexFaces through the server vs face_recognition's work in two processes ----------------

_fr = None  # face_recognition in each pool process


def _fr_start(warm: bytes) -> None:
    global _fr
    import face_recognition
    _fr = face_recognition
    _fr_index(warm)  # load its models before the clock starts


def _fr_index(image: bytes) -> int:
    """What IndexFaces does, the face_recognition way: decode, HOG (upsample 1), 5-point + ResNet
    descriptor of every face found. Returns the faces encoded."""
    import io
    pixels = _fr.load_image_file(io.BytesIO(image))
    locations = _fr.face_locations(pixels)
    return len(_fr.face_encodings(pixels, known_face_locations=locations, model="small")) if locations else 0


def _fr_pool(workers: int, warm: bytes):
    import concurrent.futures
    import multiprocessing
    # forkserver: this process has threads (the load sampler); each child re-imports this module.
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("forkserver"), initializer=_fr_start, initargs=(warm,))


def fr_run(pool, images: list[bytes], bar, task) -> dict:
    c0, t0 = os.times(), time.perf_counter()
    faces = 0
    for n in pool.map(_fr_index, images, chunksize=1):
        faces += n
        bar.advance(task)
    wall = time.perf_counter() - t0
    c1 = os.times()
    children_cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
    return {"images": len(images), "faces_indexed": faces, "wall_s": round(wall, 2),
            "images_per_s": round(len(images) / wall, 2), "faces_per_s": round(faces / wall, 2),
            "children_cpu_s_reaped": round(children_cpu, 2), "load_1min_after": load()[0]}


def versus_face_recognition(workdir: Path, images: list[bytes], warm: list[bytes], rounds: int,
                            workers: int = 2, threads: int = 2) -> dict:
    """faceaudit serve --workers 2 answering IndexFaces from 2 client threads, against
    face_recognition doing the same work (decode, detect, encode every face) in 2 processes,
    on the same images, alternating A-B-B-A... in one run; both warmed up first."""
    try:
        import face_recognition  # noqa: F401
    except ImportError:
        return {"skipped": "face_recognition is not importable (benchmarks/README.md, speed.py: how to install)"}
    runs: dict[str, list[dict]] = {"faceaudit": [], "face_recognition": []}
    import support.server
    support.server.STARTUP_TIMEOUT = max(support.server.STARTUP_TIMEOUT, 600.0)  # 2 workers on a loaded machine
    server = start_server(workdir / "versus", extra_args=("--workers", str(workers), "--engine", ENGINE))
    pool = _fr_pool(workers, warm[0])
    try:
        # warm every server worker (concurrent calls) and every pool process (its initializer ran)
        server.client().create_collection(CollectionId="warmup")
        wclients = [server.client() for _ in range(threads * 2)]
        ths = [threading.Thread(target=lambda c=c: [c.index_faces(CollectionId="warmup", Image={"Bytes": img})
                                                    for img in warm[:3]]) for c in wclients]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        list(pool.map(_fr_index, warm[:4], chunksize=1))
        with progress() as bar:
            for r in range(rounds):
                order = ["faceaudit", "face_recognition"] if r % 2 == 0 else ["face_recognition", "faceaudit"]
                for name in order:
                    task = bar.add_task(f"round {r + 1}: {name}", total=len(images))
                    if name == "faceaudit":
                        result = index_run(server, f"versus-{r}", images, threads, bar, task)
                    else:
                        result = fr_run(pool, images, bar, task)
                    result["round"] = r + 1
                    runs[name].append(result)
    finally:
        pool.shutdown()
        server.stop()
    per_round = [a["images_per_s"] / b["images_per_s"] for a, b in zip(runs["faceaudit"], runs["face_recognition"])]
    faces_round = [a["faces_per_s"] / b["faces_per_s"] if b["faces_per_s"] else None
                   for a, b in zip(runs["faceaudit"], runs["face_recognition"])]
    return {"engine": ENGINE, "model_version": MODEL_VERSION, "server_workers": workers, "client_threads": threads,
            "face_recognition_processes": workers, "images": len(images), "rounds": rounds, "runs": runs,
            "images_per_s_ratio_per_round": [round(x, 2) for x in per_round],
            "faces_per_s_ratio_per_round": [round(x, 2) if x else None for x in faces_round],
            "images_per_s_ratio_median": round(float(np.median(per_round)), 2),
            "images_per_s_ratio_range": [round(min(per_round), 2), round(max(per_round), 2)],
            "faceaudit_images_per_s": [x["images_per_s"] for x in runs["faceaudit"]],
            "face_recognition_images_per_s": [x["images_per_s"] for x in runs["face_recognition"]],
            "faces_indexed": {k: [x["faces_indexed"] for x in v] for k, v in runs.items()},
            "faceaudit_errors": sum(x["errors"] for x in runs["faceaudit"])}


def versus_markdown(report: dict) -> str:
    v, m, loads = report["versus_face_recognition"], report["machine"], report["load_average"]
    lines = ["# IndexFaces through `faceaudit serve` vs face_recognition's work, same images, one run", "",
             f"{report['when']}, {m['cpu_count']} cores ({m['cpu_model']}); load average at start {loads['start']}, "
             f"at end {loads['end']} (1-min samples: median {float(np.median(loads['samples'])):.2f}, "
             f"max {max(loads['samples'])}; includes this benchmark).", "",
             f"- faceaudit: `faceaudit serve --workers {v['server_workers']} --engine {v['engine']}` (model "
             f"{v['model_version']}), IndexFaces from {v['client_threads']} boto3 client threads (SigV4, HTTP, "
             "JSON, decode, detect, embed, store; client and server share the cores);",
             f"- face_recognition 1.3.0 in {v['face_recognition_processes']} processes: `load_image_file` of the same "
             "bytes, `face_locations` (HOG, upsample 1), `face_encodings(model=\"small\")` of every face found "
             "(5-point + dlib ResNet in dlib-bin): the same work minus HTTP and storage;",
             f"- {v['images']} UTKFace images (every k-th by path, all cells), {v['rounds']} rounds, order alternating "
             "A-B-B-A; both warmed up first.", "",
             "| round | faceaudit images/s | faces stored | face_recognition images/s | faces encoded | ratio |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a, b, ratio in zip(v["runs"]["faceaudit"], v["runs"]["face_recognition"], v["images_per_s_ratio_per_round"]):
        lines.append(f"| {a['round']} | {a['images_per_s']:.2f} | {a['faces_indexed']} | {b['images_per_s']:.2f} | "
                     f"{b['faces_indexed']} | {ratio:.2f}x |")
    lines += ["", f"**faceaudit / face_recognition, images per second: median {v['images_per_s_ratio_median']:.2f}x "
              f"(range {v['images_per_s_ratio_range'][0]:.2f}-{v['images_per_s_ratio_range'][1]:.2f}x over "
              f"{v['rounds']} rounds of {v['images']} images).** Faces per second per round: "
              + ", ".join(f"{x:.2f}x" for x in v["faces_per_s_ratio_per_round"] if x) + " (HOG finds fewer faces "
              "than YuNet on some images; an image without a face costs face_recognition no encoding).",
              f"IndexFaces errors: {v['faceaudit_errors']}.", "",
              "Produced by `benchmarks/service.py` (`--no-search --no-index` for this part alone; "
              "benchmarks/README.md); raw figures: service_vs_face_recognition.json.", ""]
    return "\n".join(lines)


# -- report ----------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    m, s, ix = report["machine"], report["search"], report["index_faces"]
    loads = report["load_average"]
    lines = [
        "# Service: boto3 against `faceaudit serve` over HTTP",
        "",
        f"{report['when']}, {m['cpu_count']} cores ({m['cpu_model']}). Client and server share them. "
        f"Load average (1/5/15 min) at start {loads['start']}, at end {loads['end']} "
        f"(1-min samples during the run: min {min(loads['samples'])}, median {float(np.median(loads['samples'])):.2f}, "
        f"max {max(loads['samples'])}; "
        "includes this benchmark's own client and server).",
        "",
        *([f"**Caution:** the 1-min load average stayed above the {m['cpu_count']} cores (median "
           f"{float(np.median(loads['samples'])):.1f}): other processes were running, so wall-clock figures "
           "include waiting for a core. Server CPU ms per call is the steadier figure.", ""]
          if float(np.median(loads["samples"])) > m["cpu_count"] + 1 else []),
        f"## SearchFacesByImage latency ({s['probes']} probe images, sequential, one client)",
        "",
        "Wall time per call in ms as boto3 sees it (p50, p95); server ms = the server's own time for the "
        "request (its request log: read body, handle, send); server CPU = the server process's mean CPU "
        "time per call. `real-only` holds the real embeddings only; the larger collections add synthetic "
        "vectors around them. Calls interleaved probe by probe, order rotating.",
        "",
        "| call | collection | faces | p50 | p95 | server ms p50 | p95 | server CPU ms | probes with a match "
        "| matches returned (mean) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in s["latency"]:
        faces = s["collections"][row["collection"]]["faces"] if row["collection"] else "—"
        match = row.get("probes_with_a_match", "—")
        lines.append(f"| {row['operation']} | {row['collection'] or '—'} | {faces} | {row['p50_ms']:.1f} | "
                     f"{row['p95_ms']:.1f} | {row['server_ms_p50']:.1f} | {row['server_ms_p95']:.1f} | "
                     f"{row['server_cpu_ms_per_call']:.1f} | {match} | {row.get('mean_matches_returned', '—')} |")
    d = s["derived"]
    lines += ["", "What the search itself costs: the same probe's server time against a collection minus against "
              "`real-only` (per-probe differences, ms; mean with a bootstrap 95% interval), and differences of "
              "p50s. `real-only` minus DetectFaces ≈ embedding the face (+ searching ~500 vectors).", "",
              "| comparison | paired server ms: median | mean [95% CI] | Δ wall p50 | Δ server p50 |",
              "| --- | ---: | ---: | ---: | ---: |"]
    d = s["derived"]
    lines.append(f"| real-only − DetectFaces | — | — | {d['wall: search real-only - detect']:.1f} | "
                 f"{d['server: search real-only - detect']:.1f} |")
    for name, pr in s.get("paired_server_ms_minus_real_only", {}).items():
        lines.append(f"| {name} − real-only | {pr['median_ms']:.1f} | {pr['mean_ms']:.1f} "
                     f"[{pr['mean_95ci_ms'][0]:.1f}, {pr['mean_95ci_ms'][1]:.1f}] | "
                     f"{d[f'wall: search {name} - real-only']:.1f} | {d[f'server: search {name} - real-only']:.1f} |")
    lines += ["",
              "First search of each collection after the server starts (its index is loaded then):", "",
              "| collection | faces | first search ms | same image again ms (median of 3) | index load ≈ ms "
              "| server ms first / again | server CPU ms first / again | server RSS MB after |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, f in s["first_search_after_start"].items():
        lines.append(f"| {name} | {s['collections'][name]['faces']} | {f['first_search_ms']:.1f} | "
                     f"{f['same_image_again_ms']:.1f} | {f['index_load_estimate_ms']:.1f} | "
                     f"{f['server_ms_first']} / {f['server_ms_again']} | "
                     f"{f['server_cpu_ms_first']} / {f['server_cpu_ms_again']} | {f['server_rss_mb_after']} |")
    syn = s["synthetic_vectors"]
    lines += ["", f"Server start to listening: {s['startup_to_listening_s']} s; first request (DetectFaces) "
              f"after start: {s['first_request_after_start_ms_detectfaces']} ms.", "",
              f"Synthetic vectors (median distance to their real source set to "
              f"{syn['target_median_distance_to_source']}); Euclidean distances p5 / p50 / p95, and the share "
              f"of probe-face pairs within FaceMatchThreshold 80 (distance {syn['threshold_80_distance']:.3f}):", "",
              "| model | synthetic → source | synthetic → nearest other real (real → nearest other real) "
              "| probe → synthetic | probe → real impostor | probe → real genuine (LFW) "
              "| share < threshold: synthetic / real impostor |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def trio(d):
        return f"{d['p5']:.3f} / {d['p50']:.3f} / {d['p95']:.3f}" if d.get("n") else "—"
    for kind, model in syn["models"].items():
        d = model["distances"]
        lines.append(f"| {kind}: {model['model']} | {trio(d['synthetic_to_source'])} | "
                     f"{trio(d['synthetic_to_nearest_other_real'])} ({trio(d['real_to_nearest_other_real'])}) | "
                     f"{trio(d['probe_to_synthetic'])} "
                     f"| {trio(d['probe_to_real_impostors'])} | {trio(d['probe_to_real_genuine_lfw'])} | "
                     f"{d['match_rate_at_threshold']['probe_vs_synthetic']:.4f} / "
                     f"{d['match_rate_at_threshold']['probe_vs_real_impostor']:.4f} |")
    lines += ["",
              f"## IndexFaces throughput ({ix['images']} UTKFace images, median of {ix['rounds']} rounds)", "",
              "| serve --workers | client threads | images/s | faces/s | × vs 1 worker, 1 thread | "
              "request p50 ms | server cores used |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in ix["summary"]:
        lines.append(f"| {row['workers']} | {row['client_threads']} | {row['images_per_s_median']:.2f} | "
                     f"{row['faces_per_s_median']:.2f} | {row['ratio_vs_w1_t1']:.2f} | "
                     f"{row['request_p50_ms_median']:.1f} | {row['server_cores_used_median']:.2f} |")
    lines += ["", "Server cores used = server CPU seconds (all its processes) / wall seconds; with 2 cores "
              "and the client on the same machine, more than ~1.6 is not to be expected.", "",
              "Produced by `benchmarks/service.py` (see benchmarks/README.md). Raw figures: service.json.", ""]
    return "\n".join(lines)


def print_tables(report: dict) -> None:
    s, ix = report["search"], report["index_faces"]
    table = Table(title="SearchFacesByImage / DetectFaces latency (ms, wall, via boto3)")
    for col in ("call", "collection", "faces", "p50", "p95", "srv p50", "srv p95", "srv CPU", "matched", "matches"):
        table.add_column(col, justify="right" if col not in ("call", "collection") else "left")
    for row in s["latency"]:
        faces = str(s["collections"][row["collection"]]["faces"]) if row["collection"] else "—"
        table.add_row(row["operation"].replace("SearchFacesByImage", "SearchByImage"),
                      row["collection"] or "—", faces, f"{row['p50_ms']:.1f}",
                      f"{row['p95_ms']:.1f}", f"{row['server_ms_p50']:.1f}", f"{row['server_ms_p95']:.1f}",
                      f"{row['server_cpu_ms_per_call']:.1f}", str(row.get("probes_with_a_match", "—")),
                      str(row.get("mean_matches_returned", "—")))
    console.print(table)
    console.print("derived (p50 differences, ms): " + ", ".join(f"{k} {v:.1f}" for k, v in s["derived"].items()))
    for name, pr in s.get("paired_server_ms_minus_real_only", {}).items():
        console.print(f"paired server ms, {name} - real-only: median {pr['median_ms']:.1f}, mean {pr['mean_ms']:.1f} "
                      f"95% CI {pr['mean_95ci_ms']}")
    table = Table(title="First search after server start")
    for col in ("collection", "faces", "first ms", "again ms", "index load ≈ ms", "srv ms first/again",
                "srv CPU ms first/again", "RSS MB"):
        table.add_column(col)
    for name, f in s["first_search_after_start"].items():
        table.add_row(name, str(s["collections"][name]["faces"]), f"{f['first_search_ms']:.1f}",
                      f"{f['same_image_again_ms']:.1f}", f"{f['index_load_estimate_ms']:.1f}",
                      f"{f['server_ms_first']}/{f['server_ms_again']}",
                      f"{f['server_cpu_ms_first']}/{f['server_cpu_ms_again']}", str(f["server_rss_mb_after"]))
    console.print(table)
    table = Table(title=f"IndexFaces throughput ({ix['images']} images, median of {ix['rounds']} rounds)")
    for col in ("workers", "threads", "images/s", "faces/s", "× vs w1 t1", "req p50 ms", "server cores"):
        table.add_column(col, justify="right")
    for row in ix["summary"]:
        table.add_row(str(row["workers"]), str(row["client_threads"]), f"{row['images_per_s_median']:.2f}",
                      f"{row['faces_per_s_median']:.2f}", f"{row['ratio_vs_w1_t1']:.2f}",
                      f"{row['request_p50_ms_median']:.1f}", f"{row['server_cores_used_median']:.2f}")
    console.print(table)


# -- main ------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="faces-dev folder (default: faces_dev.locate())")
    parser.add_argument("--real", type=int, default=500, help="faces-dev images embedded for the collections")
    parser.add_argument("--probes", type=int, default=80, help="probe images (not indexed)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up rounds of every call before timing")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--target-distance", type=float, default=0.65,
                        help="median distance of a synthetic vector from its real source")
    parser.add_argument("--noise", choices=["covariance", "isotropic"], default="covariance",
                        help="how synthetic vectors are made (see Synthetic)")
    parser.add_argument("--isotropic-size", type=int, default=100_000,
                        help="also a collection of this size with isotropic noise (0: none)")
    parser.add_argument("--index-images", type=int, default=200, help="UTKFace images for IndexFaces")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2, help="IndexFaces rounds (A-B-B-A order)")
    parser.add_argument("--no-search", action="store_true")
    parser.add_argument("--no-index", action="store_true")
    parser.add_argument("--versus-rounds", type=int, default=4,
                        help="rounds of IndexFaces via the server vs face_recognition in 2 processes (0: skip)")
    parser.add_argument("--dir", help="where the temporary data dirs go (default: system temp)")
    parser.add_argument("--out", default=str(RESULTS / "service.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    root = faces_dev.locate(args.data)
    if root is None:
        console.print("faces-dev not found: pass --data or set FACEAUDIT_TEST_DATA")
        return 2
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    loads = {"start": load(), "samples": [load()[0]]}
    stop_sampling = threading.Event()

    def sample_load():
        while not stop_sampling.wait(5.0):
            loads["samples"].append(load()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    report: dict = {"benchmark": "benchmarks/service.py",
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine_info(), "args": vars(args)}

    labels = faces_dev.read_labels(root)
    indexed, probes, throughput = choose_images(labels, args.real, args.probes, args.index_images)
    console.print(f"faces-dev: {len(labels)} labels; embedding {len(indexed)} for the collections "
                  f"+ {len(probes)} probes; {len(throughput)} UTKFace images for IndexFaces; "
                  f"load average {loads['start']}")

    with tempfile.TemporaryDirectory(prefix="faceaudit-service-bench-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        if not args.no_search:
            t0 = time.perf_counter()
            results = analyze_files([root / lab.path for lab in indexed + probes], workers=2,
                                    description="embedding faces-dev images")
            embed_s = time.perf_counter() - t0
            idx_res, probe_res = results[:len(indexed)], results[len(indexed):]
            keep = [(lab, r) for lab, r in zip(indexed, idx_res) if r.detected]
            real = np.stack([r.embedding for _, r in keep]).astype(np.float32)
            real_ids = np.array([lab.identity or "" for lab, _ in keep])
            probe_paths = [root / lab.path for lab, r in zip(probes, probe_res) if r.detected]
            probe_bytes = [p.read_bytes() for p in probe_paths]
            warm_bytes = [(root / lab.path).read_bytes() for lab, _ in keep[:5]]  # indexed images
            console.print(f"embedded {len(results)} images in {embed_s:.0f} s; {len(real)} real vectors "
                          f"(of {len(indexed)}), {len(probe_bytes)} probes with a face (of {len(probes)})")

            probe_vecs = np.stack([r.embedding for r in probe_res if r.detected])
            probe_ids = np.array([lab.identity or "" for lab, r in zip(probes, probe_res) if r.detected])
            thr = float(engine_spec(ENGINE).similarity_scale().distance(80.0))
            kinds = [args.noise] + (["isotropic"] if args.isotropic_size and args.noise != "isotropic" else [])
            gens = {kind: Synthetic(real, kind, args.target_distance) for kind in kinds}
            synthetic = {}
            for kind, gen in gens.items():
                dists = distance_report(gen, real_ids, probe_vecs, probe_ids, thr, rng)
                synthetic[kind] = {"model": gen.describe(), "param": gen.param, "distances": dists}
                console.print(f"synthetic vectors ({kind}): {gen.describe()}")
                for name, d in dists.items():
                    if d.get("n"):
                        console.print(f"  {name:<34} {fmt_dist(d)}")
                console.print(f"  FaceMatchThreshold 80 = distance {thr:.3f}; share of pairs under it: "
                              f"{dists['match_rate_at_threshold']}")

            plan = {"warmup": (20, None), "real-only": (len(real), None),
                    **{f"faces-{n}": (n, args.noise) for n in args.sizes}}
            if "isotropic" in gens and args.noise != "isotropic":
                plan[f"faces-{args.isotropic_size}-isotropic"] = (args.isotropic_size, "isotropic")
            data_dir = workdir / "search"
            built = build_collections(data_dir, gens, plan, rng)
            searched = [name for name in plan if name != "warmup"]
            s = search_latency(data_dir, probe_bytes, warm_bytes, searched, args.warmup)
            s["collections"] = built
            s["probes"] = len(probe_bytes)
            s["probe_sources"] = {src: sum(1 for lab, r in zip(probes, probe_res) if r.detected and lab.source == src)
                                  for src in sorted({lab.source for lab in probes})}
            s["embedding_s"] = round(embed_s, 1)
            s["synthetic_vectors"] = {"target_median_distance_to_source": args.target_distance,
                                      "threshold_80_distance": thr, "models": synthetic}
            derived = {}
            for key, label in (("p50_ms", "wall"), ("server_ms_p50", "server")):
                p50 = {(r["operation"], r["collection"]): r[key] for r in s["latency"]}
                derived[f"{label}: search real-only - detect"] = (p50[("SearchFacesByImage", "real-only")]
                                                                  - p50[("DetectFaces", None)])
                for name in searched[1:]:
                    derived[f"{label}: search {name} - real-only"] = (
                        p50[("SearchFacesByImage", name)] - p50[("SearchFacesByImage", "real-only")])
            s["derived"] = {k: round(v, 1) for k, v in derived.items()}
            report["search"] = s
        if not args.no_index:
            images = [(root / lab.path).read_bytes() for lab in throughput]
            warm = [(root / lab.path).read_bytes() for lab in indexed[:3]]
            ix = index_throughput(workdir, images, warm, args.workers, args.threads, args.rounds)
            ix["images"] = len(images)
            report["index_faces"] = ix
        if args.versus_rounds:
            images = [(root / lab.path).read_bytes() for lab in throughput]
            warm = [(root / lab.path).read_bytes() for lab in indexed[:4]]
            report["versus_face_recognition"] = versus_face_recognition(workdir, images, warm, args.versus_rounds)

    stop_sampling.set()
    sampler.join()
    loads["end"] = load()
    loads["note"] = "os.getloadavg() (1, 5, 15 min); includes this benchmark's own client and server"
    report["load_average"] = loads
    report["total_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if "search" in report or "index_faces" in report:  # a versus-only run leaves service.json as it was
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(out)
    versus = report.get("versus_face_recognition")
    if versus and "skipped" in versus:
        console.print(f"IndexFaces vs face_recognition skipped: {versus['skipped']}")
    elif versus:
        side = out.with_name("service_vs_face_recognition.json")
        side.write_text(json.dumps({k: report[k] for k in ("benchmark", "when", "machine", "args", "load_average",
                                                           "versus_face_recognition")}, indent=2, default=str) + "\n")
        side.with_suffix(".md").write_text(versus_markdown(report))
        console.print(side.with_suffix(".md").read_text())
    if "search" in report and "index_faces" in report:
        md = markdown(report)
        out.with_suffix(".md").write_text(md)
        print_tables(report)
        console.print(f"wrote {out} and {out.with_suffix('.md')} in {report['total_s']:.0f} s")
    elif "search" in report or "index_faces" in report:
        console.print(f"wrote {out} (partial run: no markdown) in {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
