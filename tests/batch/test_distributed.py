"""Batch work through Dask in local mode gives exactly the single-process answers, and resumes.

Images: skimage's astronaut, LFW and UTKFace images of faces-dev, a two-face image made
from two LFW photos side by side, a corrupt JPEG and an empty file. One local Dask
cluster of two workers serves the module.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from faceaudit.audit.targets.cache import ResponseCache
from faceaudit.audit.targets.local import LocalBackend
from faceaudit.audit.targets.rekognition import RekognitionTarget
from faceaudit.audit.targets.runs import detect_key
from faceaudit.batch import extract_images, index_images, list_sources
from faceaudit.batch.extraction import local_engine_fingerprint, vector_key
from faceaudit.batch.ledger import Ledger
from faceaudit.engine.distributed import FaceCluster
from faceaudit.images import load_image
from faceaudit.rekognition.faces import detect_faces
from faceaudit.rekognition.service import RekognitionService
from faceaudit.storage import EmbeddedStore
from support.images import encode

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, faces_dev_root, astronaut_jpeg):
    from PIL import Image
    folder = tmp_path_factory.mktemp("images")
    (folder / "astronaut.jpg").write_bytes(astronaut_jpeg)
    lfw = sorted((faces_dev_root / "images" / "lfw").glob("*/*.jpg"))[:4]
    utk = sorted((faces_dev_root / "images" / "utkface").glob("*.jpg"))[:2]
    for path in lfw + utk:
        (folder / path.parent.name).mkdir(exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    pair = np.hstack([np.asarray(Image.open(lfw[0]).convert("RGB")), np.asarray(Image.open(lfw[3]).convert("RGB"))])
    (folder / "two_faces.jpg").write_bytes(encode(pair, quality=95))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def reference(engine, image_folder, tmp_path_factory):
    """The single-process answers: (faces by ExternalImageId, failures by path, face count)."""
    store, failures = single_process_index(engine, tmp_path_factory.mktemp("reference"), list_sources(image_folder))
    return faces_by_image(store), failures, store.describe_collection("c").face_count


@pytest.fixture(scope="module")
def cluster():
    with FaceCluster(workers=2) as running:
        yield running


def single_process_index(engine, data_dir, sources):
    """The reference: IndexFaces, one request per image, through the service in this process."""
    service = RekognitionService(engine, EmbeddedStore(data_dir))
    service.call("CreateCollection", {"CollectionId": "c"})
    failures = {}
    for source in sources:
        try:
            service.call("IndexFaces", {"CollectionId": "c", "ExternalImageId": source.external_image_id,
                                        "Image": {"Bytes": open(source.path, "rb").read()}})
        except Exception as error:  # RekognitionError: the code is what a client sees
            failures[source.path] = error.code
    return service.store, failures


def faces_by_image(store):
    faces, token = [], None
    while True:
        page, token = store.list_faces("c", token, 4096)
        faces += store.get_faces("c", [f.face_id for f in page])
        if not token:
            break
    grouped = {}
    for face in faces:
        grouped.setdefault(face.external_image_id, []).append(face)
    return {key: sorted(group, key=lambda f: (f.bounding_box["Left"], f.bounding_box["Top"]))
            for key, group in grouped.items()}


def assert_same_faces(got, want):
    assert sorted(got) == sorted(want)
    for key, faces in want.items():
        assert len(got[key]) == len(faces), key
        for a, b in zip(got[key], faces):
            assert a.bounding_box == pytest.approx(b.bounding_box, abs=1e-9)
            assert a.confidence == pytest.approx(b.confidence)
            np.testing.assert_allclose(a.vector, b.vector, atol=1e-5)


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
