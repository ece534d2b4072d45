"""Audit targets on a small faces-dev subset: local engine, faceaudit's own server, a CSV.

The subset: 40 LFW images of 10 people (4 each) and 20 UTKFace images, plus a
corrupt JPEG, an empty file and a missing path. The local target and the
rekognition target pointed at a real ``faceaudit serve`` run the same engine
and must give identical answers.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from faceaudit.audit.targets import Detection, Match, open_target
from faceaudit.audit.targets.pool import RestartingPool
from faceaudit.audit.targets.rekognition import RekognitionTarget
from faceaudit.audit.targets.transport import Backend, Job, TargetError
from faceaudit.datasets import faces_dev

COLLECTION_PREFIX = "faceaudit-audit-"


# --- data -------------------------------------------------------------------------------
class Subset:
    def __init__(self, root: Path, tmp: Path):
        labels = faces_dev.read_labels(root)
        people = defaultdict(list)
        for label in labels:
            if label.source.startswith("LFW"):
                people[label.identity].append(label)
        chosen = [name for name, photos in sorted(people.items()) if len(photos) >= 4][:10]
        self.lfw = [str(root / label.path) for name in chosen
                    for label in sorted(people[name], key=lambda label: label.path)[:4]]
        utk = [label for label in labels if label.source.startswith("UTK")]
        self.utk = [str(root / label.path) for label in utk[::len(utk) // 20][:20]]
        self.labels = {str(root / label.path): label for label in labels}
        self.root = root
        self.identity = {p: self.labels[p].identity for p in self.lfw}
        (tmp / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
        (tmp / "empty.jpg").write_bytes(b"")
        self.corrupt, self.empty = str(tmp / "corrupt.jpg"), str(tmp / "empty.jpg")
        self.missing = str(tmp / "no-such-file.jpg")
        self.images = self.lfw + self.utk + [self.corrupt, self.empty, self.missing]

        genuine = [(a, b) for a, b in itertools.combinations(self.lfw, 2) if self.identity[a] == self.identity[b]]
        impostor = [(a, b) for a, b in itertools.combinations(self.lfw, 2)
                    if self.identity[a] != self.identity[b]][::7]
        impostor += list(itertools.combinations(self.utk[:8], 2))
        self.genuine, self.impostor = genuine, impostor
        self.broken_pairs = [(self.lfw[0], self.corrupt), (self.missing, self.lfw[1])]
        self.pairs = genuine + impostor + self.broken_pairs

        # lineup: people 0-4 have 3 photos in the gallery, people 5-9 none
        self.gallery = [p for n, p in enumerate(self.lfw) if n < 20 and n % 4] + self.utk[:10]
        self.probes = self.lfw[0::4] + [self.utk[15], self.corrupt]


@pytest.fixture(scope="module")
def subset(faces_dev_root, tmp_path_factory) -> Subset:
    return Subset(faces_dev_root, tmp_path_factory.mktemp("subset"))


def _ask(target, subset: Subset) -> dict:
    return {"detect": target.detect(subset.images), "similarities": target.similarities(subset.pairs),
            "search": target.search(subset.gallery, subset.probes, max_results=5)}


class Counting(Backend):
    """Counts the jobs that reach a backend. With ``stop_operation``, the jobs of that operation
    after the first ``stop_after`` fail with KeyboardInterrupt -- as if the user pressed Ctrl-C --
    once those first ones have finished (and a moment later, so that they are recorded)."""

    def __init__(self, inner: Backend, stop_operation: str | None = None, stop_after: int = 0):
        self.inner, self.counts = inner, Counter()
        self.stop_operation, self.stop_after = stop_operation, stop_after
        self.kind, self.endpoint, self.workers = inner.kind, inner.endpoint, inner.workers
        self._first: list[Future] = []
        self._doomed: list[Future] = []
        self._lock = threading.Lock()
        self._stopping = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def engine_endpoint(self) -> str:
        return self.inner.engine_endpoint

    def submit(self, job) -> Future:
        self.counts[job.operation] += 1
        if job.operation != self.stop_operation:
            return self.inner.submit(job)
        if self.counts[job.operation] <= self.stop_after:
            future = self.inner.submit(job)
            self._first.append(future)
            future.add_done_callback(self._check)
            return future
        future = Future()
        self._doomed.append(future)
        self._check(None)
        return future

    def _check(self, _) -> None:
        with self._lock:
            if self._stopping or len(self._first) < self.stop_after or not self._doomed:
                return
            if not all(f.done() for f in self._first):
                return
            self._stopping = True

        def stop():
            time.sleep(0.3)
            for future in self._doomed:
                future.set_exception(KeyboardInterrupt())
        threading.Thread(target=stop, daemon=True).start()

    def close(self) -> None:
        self.inner.close()


# --- targets ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("local-cache")


@pytest.fixture(scope="module")
def local(subset, local_cache):
    target = open_target("local", cache_dir=local_cache, workers=2, progress=False)
    yield target, _ask(target, subset)
    target.close()


def _server_helpers():
    """tests/server/conftest.py, loaded under its own name (see the note at its end)."""
    path = Path(__file__).resolve().parents[1] / "server" / "conftest.py"
    spec = importlib.util.spec_from_file_location("faceaudit_tests_server_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    helpers = _server_helpers()
    with helpers.start_server(tmp_path_factory.mktemp("audit-server") / "data") as running:
        yield running


def open_remote(server, cache_dir, **options):
    spec = "rekognition://" + server.endpoint_url.removeprefix("http://")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUDIT_ACCESS_KEY_ID", server.access_key_id)
        env.setenv("FACEAUDIT_SECRET_ACCESS_KEY", server.secret_access_key)
        return open_target(spec, cache_dir=cache_dir, **options)


@pytest.fixture(scope="module")
def remote_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("remote-cache")


@pytest.fixture(scope="module")
def remote(subset, server, remote_cache):
    target = open_remote(server, remote_cache, progress=False)
    yield target, _ask(target, subset)
    target.close()


def _audit_collections(server) -> list[str]:
    ids = server.client().list_collections()["CollectionIds"]
    return [c for c in ids if c.startswith(COLLECTION_PREFIX)]


# --- the local target on real data ------------------------------------------------------------
def test_local_detect_finds_faces_with_gender_and_age(local, subset):
    _, answers = local
    detections = answers["detect"]
    assert list(detections) == subset.images  # input order kept
    faces = [detections[p] for p in subset.lfw + subset.utk]
    assert sum(d.found for d in faces) >= 57
    for d in faces:
        if d.found:
            assert d.gender in ("female", "male") and 0 <= d.gender_confidence <= 100
            assert d.age_low <= d.age <= d.age_high
    labelled = [(detections[p].gender, subset.labels[p].gender) for p in subset.lfw + subset.utk
                if detections[p].found and subset.labels[p].gender]
    assert sum(said == truth for said, truth in labelled) >= 0.75 * len(labelled)


def test_unreadable_images_are_answers_not_exceptions(local, subset):
    _, answers = local
    detections = answers["detect"]
    assert detections[subset.corrupt] == Detection(face_count=0, error="InvalidImageFormatException")
    assert detections[subset.empty] == Detection(face_count=0, error="InvalidParameterException")  # as the API
    assert detections[subset.missing] == Detection(face_count=0, error="UnreadableImageFile")
    assert answers["similarities"][-2:] == [None, None]
    assert answers["search"][subset.corrupt] == []


def test_local_similarities_separate_genuine_from_impostor_pairs(local, subset):
    target, answers = local
    scores = dict(zip(subset.pairs, answers["similarities"]))
    genuine = [scores[p] for p in subset.genuine if scores[p] is not None]
    impostor = [scores[p] for p in subset.impostor if scores[p] is not None]
    assert len(genuine) >= 50 and len(impostor) >= 100
    assert sum(s >= 80 for s in genuine) >= 0.8 * len(genuine)
    assert sum(s < 80 for s in impostor) >= 0.9 * len(impostor)
    assert all(0.0 <= s <= 100.0 for s in genuine + impostor)
    # symmetric: the reversed pairs (searched from the other image, in a new run) agree
    some = subset.genuine[:4] + subset.impostor[:4]
    reversed_scores = target.similarities([(b, a) for a, b in some])
    assert reversed_scores == pytest.approx([scores[p] for p in some], abs=1e-6)


def test_local_search_is_a_ranked_lineup(local, subset):
    _, answers = local
    results = answers["search"]
    assert list(results) == subset.probes
    hits = 0
    for probe in subset.lfw[0:20:4]:  # mated probes (their 3 other photos are in the gallery)
        matches = results[probe]
        assert 1 <= len(matches) <= 5 and all(isinstance(m, Match) for m in matches)
        assert [m.similarity for m in matches] == sorted((m.similarity for m in matches), reverse=True)
        assert {m.path for m in matches} <= set(subset.gallery)
        hits += subset.identity.get(matches[0].path) == subset.identity[probe]
    assert hits >= 4


# --- local and remote agree exactly ---------------------------------------------------------
def test_local_and_rekognition_targets_give_identical_answers(local, remote):
    (local_target, local_answers), (remote_target, remote_answers) = local, remote
    assert remote_answers["detect"] == local_answers["detect"]
    assert remote_answers["similarities"] == local_answers["similarities"]
    assert remote_answers["search"] == local_answers["search"]
    local_info, remote_info = local_target.describe(), remote_target.describe()
    assert local_info["kind"] == "local" and remote_info["kind"] == "rekognition"
    assert local_info["model_version"] == remote_info["model_version"]
    assert remote_info["endpoint"].startswith("http://127.0.0.1:")
    assert local_info["workers"] == 2 and remote_info["workers"] == 4
    # the audit's own store searches exactly; a remote service's mode is not the audit's to know
    assert local_info["search_mode"] == "exact"
    assert remote_info["search_mode"] == "not known (the service's own)"


# --- the cache --------------------------------------------------------------------------------
def test_a_second_run_answers_from_the_cache(local, subset, local_cache):
    _, first = local
    target = open_target("local", cache_dir=local_cache, workers=2, progress=False)
    target.backend = counting = Counting(target.backend)
    try:
        again = _ask(target, subset)
    finally:
        target.close()
    assert again == first
    # only the model-version probe (CreateCollection + DeleteCollection) reaches the engine
    assert counting.counts["DetectFaces"] == 0
    assert counting.counts["IndexFaces"] == counting.counts["SearchFaces"] == 0
    assert counting.counts["SearchFacesByImage"] == 0


def test_an_interrupted_run_resumes_without_redoing_finished_images(server, subset, remote, tmp_path):
    _, expected = remote
    pairs = subset.genuine
    searched = len(dict.fromkeys(a for a, _ in pairs))
    first = open_remote(server, tmp_path)
    first.backend = stopping = Counting(first.backend, stop_operation="SearchFaces", stop_after=12)
    with pytest.raises(KeyboardInterrupt):
        first.similarities(pairs)
    first.close()
    assert stopping.counts["IndexFaces"] == len(subset.lfw)
    assert len(_audit_collections(server)) == 1  # kept, so the rerun need not index again

    second = open_remote(server, tmp_path, progress=True)
    second.backend = counting = Counting(second.backend)
    try:
        scores = second.similarities(pairs)
        hits = second.describe()["cache_hits"]
    finally:
        second.close()
    assert scores == expected["similarities"][:len(pairs)]  # the genuine pairs come first
    assert counting.counts["IndexFaces"] == 0
    assert 0 < hits["SearchFaces"] <= 12
    assert counting.counts["SearchFaces"] == searched - hits["SearchFaces"]
    assert _audit_collections(server) == []


def test_a_resumed_run_indexes_again_when_its_collection_is_gone(server, subset, remote, tmp_path):
    _, expected = remote
    pairs = subset.genuine[:30]  # people 0-4: 20 images
    first = open_remote(server, tmp_path)
    first.backend = Counting(first.backend, stop_operation="SearchFaces", stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        first.similarities(pairs)
    first.close()
    [kept] = _audit_collections(server)
    server.client().delete_collection(CollectionId=kept)  # e.g. cleaned up by an operator

    second = open_remote(server, tmp_path)
    second.backend = counting = Counting(second.backend)
    try:
        assert second.similarities(pairs) == expected["similarities"][:len(pairs)]
    finally:
        second.close()
    assert counting.counts["IndexFaces"] == 20
    assert _audit_collections(server) == []


def test_changing_only_the_score_normalization_reuses_detections_and_indexed_faces(
        local, subset, local_cache, engine, tmp_path, monkeypatch):
    from faceaudit.fairness.score_normalization import FairScoreNormalization
    from faceaudit.images import load_image
    from faceaudit.runtime import engine_for_model_version
    _, first = local
    vectors = []
    for path in subset.lfw + subset.utk:
        image = load_image(path)
        vectors.append(engine.embed(image, engine.detect(image)[:1])[0])
    normalization = FairScoreNormalization.fit(np.stack(vectors), n_clusters=2, target_fmr=0.05, seed=0,
                                               provenance={"engine": engine_for_model_version(
                                                   engine.model_version).name})
    normalization.save(tmp_path / "fsn.json")
    monkeypatch.setenv("FACEAUDIT_SCORE_NORMALIZATION", str(tmp_path / "fsn.json"))

    reused = open_target("local", cache_dir=local_cache, workers=2, progress=False)
    reused.backend = counting = Counting(reused.backend)
    fresh = open_target("local", cache=False, workers=2, progress=False)
    try:
        assert reused.backend.engine_endpoint != reused.backend.endpoint  # the file is in one name only
        detections = reused.detect(subset.images)
        scores = reused.similarities(subset.pairs)
        assert fresh.similarities(subset.pairs) == scores  # reusing changes no answer
    finally:
        reused.close()
        fresh.close()
    assert detections == first["detect"]
    assert counting.counts["DetectFaces"] == 0 and counting.counts["IndexFaces"] == 0
    assert counting.counts["SearchFaces"] > 0  # similarities do depend on the normalization
    assert scores != first["similarities"]


def test_temporary_collections_are_deleted(local, remote, server, local_cache):
    """On a remote target every audit collection is deleted; the local engine's own store in the
    cache folder keeps its runs' collections (the cached embeddings, see _keeps_collections)."""
    from faceaudit.storage import EmbeddedStore
    local_target, _ = local
    remote_target, _ = remote
    assert _audit_collections(server) == []
    remote_target.close()
    local_target.close()
    assert _audit_collections(server) == []
    store = EmbeddedStore(local_cache / "local-store")
    try:
        collections, _ = store.list_collections_detailed()
        assert len(collections) >= 2  # one per distinct run (the pairs, the lineup gallery, ...)
        assert all(c.collection_id.startswith(COLLECTION_PREFIX) for c in collections)
    finally:
        store.close()


# --- CSV -------------------------------------------------------------------------------------
def test_csv_target_round_trip_with_a_missing_row(local, subset, tmp_path):
    _, answers = local
    detections = answers["detect"]
    faces = subset.lfw[:6] + subset.utk[:2]

    def rel(path: str) -> str:  # relative to the dataset root: matched as a suffix of the audit's paths
        return str(Path(path).relative_to(subset.root))

    rows = []
    for n, path in enumerate(faces[:-1]):  # the last image has no row: a missing prediction
        d = detections[path]
        row = {"path": rel(path), "face_detected": "true" if d.found else "0",
               "gender": {"female": "F", "male": "Male"}[d.gender], "gender_confidence": repr(d.gender_confidence)}
        if n % 2:
            row.update(age_low=repr(d.age_low), age_high=repr(d.age_high))
        else:
            row.update(age=repr(d.age))
        rows.append(row)
    rows.append({"path": rel(subset.utk[5]), "face_detected": "0"})
    pairs = subset.genuine[:5] + subset.impostor[:5]
    scores = dict(zip(subset.pairs, answers["similarities"]))
    for a, b in pairs[:-1]:  # the last pair is missing; one pair written in the other order
        first, second = (b, a) if (a, b) == pairs[1] else (a, b)
        rows.append({"path_a": rel(first), "path_b": rel(second), "similarity": repr(scores[(a, b)])})
    probes = subset.probes[:3]
    for probe in probes[:2]:  # the third probe is missing
        for match in answers["search"][probe]:
            rows.append({"probe": rel(probe), "gallery": rel(match.path), "similarity": repr(match.similarity)})
    columns = ["path", "face_detected", "gender", "gender_confidence", "age", "age_low", "age_high",
               "path_a", "path_b", "similarity", "probe", "gallery"]
    csv_path = tmp_path / "exports" / "predictions.csv"
    csv_path.parent.mkdir()
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)

    target = open_target(f"csv:{csv_path}")
    got = target.detect(faces + [subset.utk[5]])
    for n, path in enumerate(faces[:-1]):
        d = detections[path]
        if n % 2:  # a range
            assert got[path] == Detection(1, d.gender, d.gender_confidence, d.age_low, d.age_high)  # no face_count: 1
            assert got[path].has_age_range and got[path].age == d.age
        else:  # a point estimate is not a range: its error is measured, no coverage
            assert got[path] == Detection(1, d.gender, d.gender_confidence, age_estimate=d.age)
            assert not got[path].has_age_range and got[path].age == d.age
    assert got[faces[-1]] == Detection(face_count=0, error="MissingPrediction")
    assert got[subset.utk[5]] == Detection(face_count=0)
    assert target.similarities(pairs) == [scores[p] for p in pairs[:-1]] + [None]
    found = target.search(subset.gallery, probes, max_results=5)
    assert found[probes[0]] == answers["search"][probes[0]]
    assert found[probes[1]] == answers["search"][probes[1]]
    assert found[probes[2]] == []
    assert target.describe()["missing"] == {"detections": 1, "pairs": 1, "probes": 1}
    assert target.describe()["kind"] == "csv"


def test_csv_target_rejects_ambiguous_paths(tmp_path):
    from faceaudit.audit.targets.csv_predictions import CsvTarget
    (tmp_path / "p.csv").write_text("path,face_detected\nimg.jpg,1\n")
    target = CsvTarget(tmp_path / "p.csv")
    with pytest.raises(ValueError, match="matches 2 images"):
        target.detect(["/data/a/img.jpg", "/data/b/img.jpg"])


# --- opening targets ---------------------------------------------------------------------------
def test_open_target_parses_its_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown target"):
        open_target("s3://bucket")
    with pytest.raises(ValueError, match="HOST:PORT"):
        open_target("rekognition://localhost")
    aws = open_target("rekognition://aws", cache=False)  # not called: no network here
    try:
        assert isinstance(aws, RekognitionTarget) and aws.backend.endpoint.startswith("aws:")
    finally:
        aws.close()


def test_a_refused_request_raises_instead_of_counting_as_no_face(server, subset, tmp_path):
    spec = "rekognition://" + server.endpoint_url.removeprefix("http://")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUDIT_ACCESS_KEY_ID", server.access_key_id)
        env.setenv("FACEAUDIT_SECRET_ACCESS_KEY", "not-the-secret-0123456789abcdefghijklmn")
        target = open_target(spec, cache_dir=tmp_path, progress=False)
    try:
        with pytest.raises(TargetError) as raised:
            target.detect(subset.lfw[:2])
        assert raised.value.code == "InvalidSignatureException"
    finally:
        target.close()


# --- the local target's worker pool --------------------------------------------------------------
def _no_setup() -> None:
    pass


def _die_once(marker: str) -> int:
    """Kills its worker the first time it runs (as a worker that crashed would die), answers after."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return 7


def _always_die() -> None:
    os._exit(1)


def test_a_worker_that_dies_is_retried_once_in_a_fresh_pool(tmp_path):
    pool = RestartingPool(1, _no_setup, ())
    try:
        assert pool.submit(_die_once, str(tmp_path / "died")).result(timeout=120) == 7
        assert pool.restarts == 1
    finally:
        pool.shutdown()


def test_a_job_that_kills_every_worker_fails_after_one_retry():
    pool = RestartingPool(1, _no_setup, ())
    try:
        with pytest.raises(BrokenProcessPool):
            pool.submit(_always_die).result(timeout=120)
        assert pool.restarts == 1
    finally:
        pool.shutdown()


def test_workers_are_not_forked_from_the_audit_process():
    # forkserver: a worker's parent is the clean server process, not this (threaded) one
    pool = RestartingPool(1, _no_setup, ())
    try:
        assert pool.submit(os.getppid).result(timeout=120) != os.getpid()
    finally:
        pool.shutdown()


def test_the_local_backend_hands_its_workers_the_engine_settings_it_was_made_with(tmp_path, monkeypatch):
    # forkserver workers do not see os.environ changes made after their server started
    from faceaudit.audit.targets.local import LocalBackend
    from faceaudit.settings import GENDER_HEAD_ENV
    head = tmp_path / "head.json"
    head.write_text("{}")
    monkeypatch.setenv(GENDER_HEAD_ENV, str(head))
    backend = LocalBackend(1, tmp_path / "store")
    monkeypatch.delenv(GENDER_HEAD_ENV)
    try:
        assert backend.environment[GENDER_HEAD_ENV] == str(head)
        assert backend.endpoint.startswith("local+gender-head:")
        assert LocalBackend(1, tmp_path / "store2").endpoint == "local"
    finally:
        backend.close()


def test_answers_already_read_are_released_before_the_last_one_arrives():
    """A call's finished answers are not all held until its last one: each SearchFaces answer
    lists up to 4096 faces, and holding them all made a 3,000-image audit peak near 10 GB."""
    import gc
    import weakref

    class Response(dict):  # a dict that can be watched with a weakref
        pass

    jobs = [Job("SearchFaces", {"n": n}) for n in range(50)]
    alive: list[weakref.ref] = []
    last: Future = Future()

    class Instant(Backend):
        kind, endpoint, workers = "rekognition", "test", 1

        def submit(self, job) -> Future:
            if job.request["n"] == len(jobs) - 1:
                return last  # finished by done() below, once every other answer was read
            response = Response(FaceMatches=[{"Similarity": 1.0}] * 4096)
            alive.append(weakref.ref(response))
            future: Future = Future()
            future.set_result(("ok", response))
            return future

    target = RekognitionTarget(Instant(), progress=False)
    read: list[int] = []
    held_at_the_end: list[int] = []

    def done(i, outcome) -> None:
        read.append(i)
        if len(read) == len(jobs) - 1:
            gc.collect()
            held_at_the_end.append(sum(ref() is not None for ref in alive))
            last.set_result(("ok", Response()))

    target._run_jobs(jobs, "test", done)
    assert sorted(read) == list(range(len(jobs)))
    assert held_at_the_end[0] <= 2  # the answer being read (and the loop's last), not all 49
