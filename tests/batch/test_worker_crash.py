"""An image that kills its Dask worker process fails alone: it is recorded as failed with a clear
reason, the rest of the job completes, and a rerun does not run it again.

The crash is real: a test-only engine (support.crashing_engine, registered in every worker by
a worker plugin) ends the worker process with os._exit on images CRASH_WIDTH pixels wide,
as a segfault in a native library or the OOM killer would. The scheduler gives up on a task
after ``distributed.scheduler.allowed-failures`` + 1 worker deaths; 0 here keeps the test short.
"""

from __future__ import annotations

import hashlib

import dask
import numpy as np
import pytest

from faceaudit.audit.targets.cache import ResponseCache
from faceaudit.audit.targets.runs import detect_key
from faceaudit.batch import extract_images, index_images, list_sources
from faceaudit.batch.extraction import local_engine_fingerprint
from faceaudit.batch.ledger import Ledger
from faceaudit.engine.distributed import WORKER_CRASHED, FaceCluster
from faceaudit.runtime import engine_spec
from faceaudit.settings import Settings
from faceaudit.storage import EmbeddedStore
from support.crashing_engine import CRASH_WIDTH, ENGINE_NAME, RegisterCrashingEngine
from support.images import encode

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def folder(tmp_path_factory, faces_dev_root):
    folder = tmp_path_factory.mktemp("crash-images")
    for path in sorted((faces_dev_root / "images" / "lfw").glob("*/*.jpg"))[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    noise = np.random.default_rng(7).integers(0, 255, (150, CRASH_WIDTH, 3), dtype=np.uint8)
    (folder / "kills_the_worker.jpg").write_bytes(encode(noise, quality=90))
    return folder


@pytest.fixture(scope="module")
def crashing_cluster():
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with FaceCluster(workers=2) as running:
            running.client.register_plugin(RegisterCrashingEngine())
            yield running


SETTINGS = Settings.from_env({"FACEAUDIT_ENGINE": ENGINE_NAME})


def test_an_image_that_kills_its_worker_is_recorded_failed_and_the_job_completes(crashing_cluster, folder,
                                                                                tmp_path):
    crashing_cluster.client.wait_for_workers(2, timeout=120)
    sources = list_sources(folder)
    store, ledger = EmbeddedStore(tmp_path), Ledger(tmp_path, "index:c")
    summary = index_images(store, "c", sources, crashing_cluster, ledger, progress=False, settings=SETTINGS)
    [(path, code, message)] = summary.failed
    assert path.endswith("kills_the_worker.jpg") and code == WORKER_CRASHED
    assert "worker process died" in message and "KilledWorker" in message
    assert summary.processed == len(sources) and summary.faces == 4
    assert store.describe_collection("c").face_count == 4  # the four photos, each indexed once
    assert [row.error for row in ledger.rows("failed")] == [WORKER_CRASHED]

    again = index_images(store, "c", sources, crashing_cluster, ledger, progress=False, settings=SETTINGS)
    assert again.processed == 0 and again.already_done == len(sources) and not again.failed
    assert [(p, c) for p, c, _ in again.failed_before] == [(path, WORKER_CRASHED)]

    retried = index_images(store, "c", sources, crashing_cluster, ledger, progress=False, settings=SETTINGS,
                           retry_failed=True)
    assert retried.processed == 1 and [c for _, c, _ in retried.failed] == [WORKER_CRASHED]
    assert store.describe_collection("c").face_count == 4


def test_batch_extraction_caches_an_image_that_kills_its_worker(crashing_cluster, folder, tmp_path):
    crashing_cluster.client.wait_for_workers(2, timeout=120)
    sources = list_sources(folder)
    cache = ResponseCache(tmp_path / "cache")
    try:
        summary = extract_images(cache, sources, crashing_cluster, progress=False, settings=SETTINGS)
        assert [c for _, c, _ in summary.failed] == [WORKER_CRASHED] and summary.processed == len(sources)
        fingerprint = local_engine_fingerprint(engine_spec("sface").model_version, SETTINGS)
        crash = next(s for s in sources if s.path.endswith("kills_the_worker.jpg"))
        entry = cache.get(detect_key(fingerprint, hashlib.sha256(open(crash.path, "rb").read()).hexdigest()))
        assert entry["Error"]["Code"] == WORKER_CRASHED
        again = extract_images(cache, sources, crashing_cluster, progress=False, settings=SETTINGS)
        assert again.processed == 0 and again.already_done == len(sources)
    finally:
        cache.close()
