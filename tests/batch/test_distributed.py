"""Batch work through Dask in local mode gives exactly the single-process answers, and resumes.

Images and the local Dask cluster of two workers: tests/batch/conftest.py.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from batch_helpers import assert_same_faces, faces_by_image

from faceaudit.audit.targets.cache import ResponseCache
from faceaudit.audit.targets.local import LocalBackend
from faceaudit.audit.targets.rekognition import RekognitionTarget
from faceaudit.audit.targets.runs import detect_key
from faceaudit.batch import extract_images, index_images, list_sources
from faceaudit.batch.extraction import local_engine_fingerprint, vector_key
from faceaudit.batch.ledger import Ledger
from faceaudit.images import load_image
from faceaudit.rekognition.faces import detect_faces
from faceaudit.storage import EmbeddedStore

pytestmark = pytest.mark.models


def test_bulk_indexing_on_the_cluster_equals_single_requests_and_resumes(reference, cluster, image_folder, tmp_path):
    sources = list_sources(image_folder)
    want, failures, face_count = reference
    assert sum(len(v) for v in want.values()) >= len(sources) - 2  # every real photo has a face
    assert max(len(v) for v in want.values()) == 2  # the two-face image

    data_dir = tmp_path / "batch"
    store, ledger = EmbeddedStore(data_dir), Ledger(data_dir, "index:c")
    first = index_images(store, "c", sources, cluster, ledger, progress=False, stop_after=4)
    assert first.processed == 4 and first.stopped
    rest = index_images(store, "c", sources, cluster, ledger, progress=False)
    assert rest.already_done == 4 and rest.processed == len(sources) - 4 and not rest.stopped
    # Failed images: reported with Rekognition's error code, never fatal, the same as one request each.
    reported = {path: code for path, code, _ in first.failed + rest.failed}
    assert reported == failures and len(failures) == 2
    assert_same_faces(faces_by_image(store), want)
    again = index_images(store, "c", sources, cluster, ledger, progress=False)
    assert again.processed == 0 and again.already_done == len(sources)
    assert {path: code for path, code, _ in again.failed_before} == failures  # still reported
    assert store.describe_collection("c").face_count == face_count


class CrashAfterStoreWrite(Ledger):
    """A ledger whose process dies (once) after a batch's faces reached the store, before 'done'."""

    crashed = False

    def record(self, rows):
        if rows and all(r.state == "done" for r in rows) and not self.crashed:
            CrashAfterStoreWrite.crashed = True
            raise KeyboardInterrupt("killed between the store's commit and the ledger's")
        super().record(rows)


def test_a_kill_between_the_store_and_the_ledger_indexes_nothing_twice(reference, cluster, image_folder, tmp_path):
    sources = [s for s in list_sources(image_folder) if "corrupt" not in s.path and "empty" not in s.path]
    data_dir = tmp_path / "batch"
    store = EmbeddedStore(data_dir)
    with pytest.raises(KeyboardInterrupt):
        index_images(store, "c", sources, cluster, CrashAfterStoreWrite(data_dir, "index:c"), progress=False)
    assert store.describe_collection("c").face_count > 0  # the batch's faces did commit
    ledger = Ledger(data_dir, "index:c")
    assert len(ledger.rows("pending")) == len(sources)
    resumed = index_images(store, "c", sources, cluster, ledger, progress=False)
    assert resumed.recovered == len(sources) and resumed.processed == 0
    assert_same_faces(faces_by_image(store), reference[0])


def test_batch_extraction_fills_the_audit_cache_the_local_target_reads(engine, cluster, image_folder, tmp_path):
    sources = list_sources(image_folder)
    cache = ResponseCache(tmp_path / "cache")
    first = extract_images(cache, sources, cluster, progress=False, stop_after=3)
    assert first.processed == 3 and first.stopped
    rest = extract_images(cache, sources, cluster, progress=False)
    assert rest.already_done == 3 and rest.processed == len(sources) - 3
    assert {(p.split("/")[-1], c) for p, c, _ in rest.failed} == {
        ("corrupt.jpg", "InvalidImageFormatException"), ("empty.png", "InvalidImageFormatException")}

    fingerprint = local_engine_fingerprint(engine.model_version)
    for source in sources:
        data = open(source.path, "rb").read()
        entry = cache.get(detect_key(fingerprint, hashlib.sha256(data).hexdigest()))
        if "corrupt" in source.path or "empty" in source.path:
            assert entry["Error"]["Code"] == "InvalidImageFormatException"
            continue
        # Exactly the single-process DetectFaces response (after the cache's JSON round trip).
        assert entry == json.loads(json.dumps(detect_faces(engine, data, ["ALL"])))
        vector = cache.get(vector_key(fingerprint, hashlib.sha256(data).hexdigest()))
        image = load_image(data)
        faces = engine.detect(image)
        assert vector["Faces"] == len(faces) > 0
        np.testing.assert_allclose(vector["Vector"], engine.embed(image, faces[:1])[0], atol=1e-5)

    # The local target answers DetectFaces for these images from the cache alone.
    cache.close()
    target = RekognitionTarget(LocalBackend(workers=1), cache=ResponseCache(tmp_path / "cache"), progress=False)
    try:
        target.detect([s.path for s in sources if "corrupt" not in s.path and "empty" not in s.path])
        assert target.calls["DetectFaces"] == 0
        assert target.cache_hits["DetectFaces"] == len(sources) - 2
        assert target.engine_fingerprint == fingerprint
    finally:
        target.close()
