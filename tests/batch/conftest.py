"""Fixtures of the batch tests: the images (faces-dev photos, a two-face image, a corrupt JPEG,
an empty file) and one local Dask cluster of two workers for the session."""

from __future__ import annotations

import numpy as np
import pytest
from batch_helpers import faces_by_image, single_process_index

from faceaudit.batch import list_sources
from faceaudit.engine.distributed import FaceCluster
from support.images import encode


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def cluster():
    with FaceCluster(workers=2) as running:
        yield running


@pytest.fixture(scope="session")
def reference(engine, image_folder, tmp_path_factory):
    """The single-process answers: (faces by ExternalImageId, failures by path, face count)."""
    store, failures = single_process_index(engine, tmp_path_factory.mktemp("reference"), list_sources(image_folder))
    return faces_by_image(store), failures, store.describe_collection("c").face_count
