"""What the batch tests compare: the single-process IndexFaces answers and a store's faces by image."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.rekognition.service import RekognitionService
from faceaudit.storage import EmbeddedStore


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
