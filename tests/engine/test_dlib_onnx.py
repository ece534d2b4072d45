"""dlib's ResNet converted to ONNX: same descriptors as dlib on real faces, safe cache, logged fallback."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import dlib
import numpy as np
import pytest

from faceaudit.datasets import faces_dev
from faceaudit.engine import dlib_onnx
from faceaudit.engine.dlib_engine import EMBED_CHIP_PADDING, EMBED_CHIP_SIZE, DlibEngine
from faceaudit.engine.model_files import FIVE_POINT_LANDMARKS, RESNET_EMBEDDING, dlib_model_file
from faceaudit.images import load_image

pytestmark = pytest.mark.models  # runs the engine (in this process or a `faceaudit` subprocess)

SOURCE = dlib_model_file(RESNET_EMBEDDING)
MAX_ABS_DIFFERENCE = 1e-5
N_IMAGES = 60  # spread over faces-dev's sources and cells by a fixed stride


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_engine(cache):
    os.environ[dlib_onnx.CACHE_ENV] = str(cache)
    try:
        engine = DlibEngine()
    finally:
        del os.environ[dlib_onnx.CACHE_ENV]
    assert engine.embedding_backend == "onnxruntime"
    return engine


@pytest.fixture(scope="module")
def dlib_encoder():
    return dlib.face_recognition_model_v1(SOURCE)


@pytest.fixture(scope="module")
def real_faces(faces_dev_root, onnx_engine):
    """(image, largest face) for a fixed sample of faces-dev images."""
    labels = sorted(faces_dev.read_labels(faces_dev_root), key=lambda label: label.path)
    chosen = labels[::max(1, len(labels) // N_IMAGES)][:N_IMAGES]
    out = []
    for label in chosen:
        image = load_image(str(faces_dev_root / label.path))
        faces = onnx_engine.detect(image)
        if faces:
            out.append((image, faces[0]))
    assert len(out) >= N_IMAGES - 2, "the detector should find nearly every faces-dev face"
    return out


def test_onnx_descriptors_equal_dlibs_on_real_chips(onnx_engine, dlib_encoder, real_faces):
    differences = []
    for image, face in real_faces:
        ours = onnx_engine.embed(image, [face])
        chip = dlib.get_face_chip(image.pixels, face.alignment, size=EMBED_CHIP_SIZE, padding=EMBED_CHIP_PADDING)
        theirs = np.array(dlib_encoder.compute_face_descriptor(chip), dtype=np.float32)
        assert ours.shape == (1, 128) and ours.dtype == np.float32
        differences.append(np.abs(ours[0] - theirs).max())
    assert max(differences) < MAX_ABS_DIFFERENCE, f"max abs difference {max(differences):.2e}"


def test_batched_onnx_equals_dlib_batch(onnx_engine, dlib_encoder, real_faces):
    # Several faces of one "image": embed a batch through both runtimes.
    image, face = real_faces[0]
    shapes = dlib.full_object_detections()
    for _ in range(5):
        shapes.append(face.alignment)
    chips = dlib.get_face_chips(image.pixels, shapes, size=EMBED_CHIP_SIZE, padding=EMBED_CHIP_PADDING)
    theirs = np.array([np.array(v) for v in dlib_encoder.compute_face_descriptor(chips)], dtype=np.float32)
    ours = onnx_engine.embed(image, [face] * 5)
    assert ours.shape == (5, 128)
    assert np.abs(ours - theirs).max() < MAX_ABS_DIFFERENCE


def test_descriptors_separate_people(onnx_engine, real_faces):
    # Not just equal to dlib: distinct people are farther apart than a face and itself.
    vectors = np.concatenate([onnx_engine.embed(image, [face]) for image, face in real_faces[:10]])
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    assert np.all(distances[~np.eye(10, dtype=bool)] > 0.2)


def test_input_tensor_is_dlibs_normalisation():
    chips = np.zeros((1, 150, 150, 3), dtype=np.uint8)
    chips[0, 0, 0] = (255, 0, 128)
    tensor = dlib_onnx.chips_to_tensor(chips, (122.782, 117.001, 104.298))
    assert tensor.shape == (1, 3, 150, 150)
    np.testing.assert_allclose(tensor[0, :, 0, 0], [(255 - 122.782) / 256, -117.001 / 256, (128 - 104.298) / 256],
                               rtol=1e-6)
    with pytest.raises(ValueError):
        dlib_onnx.chips_to_tensor(chips.astype(np.float32), (0.0, 0.0, 0.0))


def test_cache_is_reused_and_keyed_by_source(cache, onnx_engine):
    first = dlib_onnx.converted_model(SOURCE, cache)
    assert first.source_sha256 == dlib_onnx.sha256_file(SOURCE)
    assert first.source_sha256[:16] in first.path.name
    stamp = first.path.stat().st_mtime_ns
    again = dlib_onnx.converted_model(SOURCE, cache)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # no temporary file left


def test_corrupt_cache_file_is_replaced(tmp_path, caplog):
    target = dlib_onnx.converted_model(SOURCE, tmp_path).path
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 3])
    with caplog.at_level(logging.WARNING, logger="faceaudit.engine.dlib_onnx"):
        again = dlib_onnx.converted_model(SOURCE, tmp_path)
    assert again.path == target and target.read_bytes() == good
    assert "ignoring unreadable cached model" in caplog.text


def _convert_in_child(directory: str, queue) -> None:
    try:
        queue.put(str(dlib_onnx.converted_model(SOURCE, directory).path))
    except Exception as error:  # reported to the parent, which fails the test
        queue.put(f"error: {error!r}")


def test_concurrent_first_use_from_two_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_convert_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert results[0] == results[1] and not results[0].startswith("error"), results
    import onnxruntime as ort
    session = ort.InferenceSession(results[0], providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape[1] == 128
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(results[0]).name]


def test_parser_rejects_truncated_and_foreign_files():
    data = Path(SOURCE).read_bytes()
    with pytest.raises(dlib_onnx.DlibFormatError):
        dlib_onnx.read_dlib_resnet(data[:-100])
    with pytest.raises(dlib_onnx.DlibFormatError):
        dlib_onnx.read_dlib_resnet(Path(dlib_model_file(FIVE_POINT_LANDMARKS))
                                   .read_bytes())
    net = dlib_onnx.read_dlib_resnet(data)
    net.layers[5] = dlib_onnx.Layer("relu")  # another architecture than the converter knows
    with pytest.raises(dlib_onnx.DlibFormatError):
        dlib_onnx.check_architecture(net)


def test_engine_falls_back_to_dlib_when_conversion_fails(monkeypatch, caplog, real_faces, onnx_engine):
    def broken(*args, **kwargs):
        raise dlib_onnx.DlibFormatError("simulated")

    monkeypatch.setattr(dlib_onnx, "converted_model", broken)
    with caplog.at_level(logging.WARNING, logger="faceaudit.engine.dlib_engine"):
        engine = DlibEngine()
    assert engine.embedding_backend == "dlib"
    assert "conversion failed" in caplog.text and "simulated" in caplog.text
    image, face = real_faces[1]
    np.testing.assert_allclose(engine.embed(image, [face]), onnx_engine.embed(image, [face]), atol=MAX_ABS_DIFFERENCE)


def test_dlib_backend_on_request(real_faces, onnx_engine):
    engine = DlibEngine(onnx_embedding=False)
    assert engine.embedding_backend == "dlib"
    image, face = real_faces[2]
    np.testing.assert_allclose(engine.embed(image, [face]), onnx_engine.embed(image, [face]), atol=MAX_ABS_DIFFERENCE)
