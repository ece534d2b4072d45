"""dlib's face recognition ResNet as an ONNX graph, converted from dlib's own model file.

dlib runs its ResNet (``dlib_face_recognition_resnet_model_v1.dat``, from
``face-recognition-models``) about ten times slower than onnxruntime runs the
same arithmetic. This module reads dlib's serialization of that network (the
byte layout of dlib's ``serialize()``/``deserialize()`` for its add_layer,
tag/skip, loss_metric, con, affine, relu, max/avg_pool, add_prev and fc layers)
and writes the same network as ONNX, weights copied bit for bit. dlib still
finds landmarks and cuts the 150x150 chips; only the network is replaced.

The conversion runs on first use and is cached in the user's cache directory,
keyed by the SHA-256 of the source file and the converter's version, so a
changed model file or converter never reuses a stale graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceaudit.settings import CACHE_DIR_ENV, Settings

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Bump when the graph this module builds changes: the cache key includes it.
CONVERTER_VERSION = "1"
CACHE_ENV = CACHE_DIR_ENV
INPUT_NAME, OUTPUT_NAME = "chips", "descriptors"
CHIP_SIZE = 150


class DlibFormatError(ValueError):
    """The file is not the dlib network this converter knows."""


# -- dlib's serialization primitives (dlib/serialize.h) ------------------------------------------

class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError("unexpected end of file")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        # dlib's portable integers: a control byte (low 4 bits: byte count, bit 7:
        # negative), then the magnitude in that many little-endian bytes.
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def real(self) -> float:
        # Floating point values are a (mantissa, exponent) pair of integers.
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:  # dlib's codes for inf / -inf / nan
            raise DlibFormatError("non-finite hyperparameter")
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        raw = self.take(self.integer())
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as error:
            raise DlibFormatError(f"not a dlib name at {self.pos - len(raw)}") from error

    def boolean(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at {self.pos - 1}")
        return char == b"1"

    def expect(self, what: str, value: int) -> None:
        got = self.integer()
        if got != value:
            raise DlibFormatError(f"{what}: expected {value}, found {got} at {self.pos}")

    def tensor(self) -> np.ndarray:
        # resizable_tensor: version 2, (num_samples, k, nr, nc), then float32 little endian.
        self.expect("tensor version", 2)
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.expect("alias_tensor version", 1)
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


# -- the network ---------------------------------------------------------------------------------

@dataclass
class Layer:
    """One computational layer as dlib stores it."""

    kind: str  # "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibResNet:
    input_means: tuple[float, float, float]  # input_rgb_image_sized's avg_red/green/blue
    chip_size: int
    layers: list[Layer]  # bottom (input side) first
    markers: list[int]  # the header's wrapper versions, top first (2 = add_layer, 1 = tag/skip)


def _read_layer(r: _Reader) -> Layer:
    name = r.string()
    if name == "con_4":
        weights = r.tensor()
        filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
        f_shape, b_shape = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate / weight-decay multipliers: training only
            r.real()
        flat = weights.reshape(-1)
        n_filter = int(np.prod(f_shape))
        if flat.size != n_filter + int(np.prod(b_shape)) or f_shape[0] != filters:
            raise DlibFormatError("con_ parameter sizes do not add up")
        return Layer("con", {"w": flat[:n_filter].reshape(f_shape), "b": flat[n_filter:].copy(),
                             "kernel": (rows, cols), "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)})
    if name == "affine_":
        params = r.tensor().reshape(-1)
        g_shape, b_shape = r.alias_tensor(), r.alias_tensor()
        mode = r.integer()
        if mode != 0 or g_shape != b_shape:  # 0: CONV_MODE, one gamma/beta per channel
            raise DlibFormatError("only per-channel (CONV_MODE) affine layers are supported")
        n = int(np.prod(g_shape))
        return Layer("affine", {"gamma": params[:n].copy(), "beta": params[n:2 * n].copy()})
    if name == "relu_":
        return Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
        return Layer(name[:8], {"kernel": (rows, cols), "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)})
    if name == "add_prev_":
        return Layer("add_prev")
    if name == "fc_2":
        outputs, inputs = r.integer(), r.integer()
        params = r.tensor().reshape(-1)
        w_shape, b_shape = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.integer()
        for _ in range(4):
            r.real()
        weights = params[:inputs * outputs].reshape(inputs, outputs)  # output = input @ W
        bias = params[inputs * outputs:].copy() if bias_mode == 0 else None  # 0: FC_HAS_BIAS
        if w_shape[:2] != (inputs, outputs):
            raise DlibFormatError("fc_ weight shape mismatch")
        return Layer("fc", {"w": weights.copy(), "b": bias})
    raise DlibFormatError(f"unsupported dlib layer {name!r}")


def _skip_runtime_state(r: _Reader, tensors: int) -> None:
    # setup/stale/disabled flags and empty training-time tensors
    for _ in range(3):
        r.boolean()
    for _ in range(tensors):
        r.tensor()


def read_dlib_resnet(data: bytes) -> DlibResNet:
    """Parse dlib's serialization of its metric-learning ResNet (loss_metric over add_layers)."""
    r = _Reader(data)
    r.expect("add_loss_layer version", 1)
    if r.string() != "loss_metric_2":
        raise DlibFormatError("not a loss_metric network")
    r.real(), r.real()  # margin and distance threshold: training only
    # Each wrapper writes its version, then its subnetwork, then its own details:
    # the versions of every layer, top first, come before any layer's details.
    markers: list[int] = []
    while True:
        version = r.integer()
        if version == 3:  # the add_layer that sits on the input layer
            break
        if version not in (1, 2):
            raise DlibFormatError(f"unexpected layer version {version}")
        markers.append(version)
    if r.string() != "input_rgb_image_sized":
        raise DlibFormatError("input is not input_rgb_image_sized")
    means = (r.real(), r.real(), r.real())
    rows, cols = r.integer(), r.integer()
    if rows != cols:
        raise DlibFormatError("non-square input")
    layers = [_read_layer(r)]
    _skip_runtime_state(r, 3)
    r.integer()  # sample_expansion_factor
    for _ in range(markers.count(2)):
        layers.append(_read_layer(r))
        _skip_runtime_state(r, 3)
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} bytes left after the network")
    return DlibResNet(means, rows, layers, markers)


# dlib's dnn_face_recognition_ex.cpp network, bottom first: the stem, then residual
# blocks (width, downsampling), as dlib declares it (alevel4 .. alevel0).
_STEM = ["con", "affine", "relu", "max_pool"]
_BLOCKS = ([(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2
           + [(256, True)] + [(256, False)] * 2 + [(256, True)])
_HEAD = ["avg_pool", "fc"]


def _expected_kinds() -> tuple[list[str], list[int]]:
    """Layer kinds bottom first, and the header markers top first, of the known architecture."""
    kinds, markers_bottom_up = list(_STEM), [2] * len(_STEM)
    block = ["con", "affine", "relu", "con", "affine"]
    for _, down in _BLOCKS:
        # tag1, block, [tag2, skip1, avg_pool], add_prev, relu
        kinds += block + (["avg_pool"] if down else []) + ["add_prev", "relu"]
        markers_bottom_up += [1] + [2] * 5 + ([1, 1, 2] if down else []) + [2, 2]
    kinds += _HEAD
    markers_bottom_up += [2, 2]
    # the header holds every wrapper but the bottom one (the input add_layer, version 3)
    return kinds, markers_bottom_up[1:][::-1]


def check_architecture(net: DlibResNet) -> None:
    kinds, markers = _expected_kinds()
    if [layer.kind for layer in net.layers] != kinds or net.markers != markers:
        raise DlibFormatError("the network is not dlib's face recognition ResNet v1 layout")
    widths = [layer.params["w"].shape[0] for layer in net.layers if layer.kind == "con"]
    expected = [32] + [w for w, _ in _BLOCKS for _ in (0, 1)]
    if widths != expected:
        raise DlibFormatError(f"unexpected filter counts {widths}")


# -- ONNX graph ----------------------------------------------------------------------------------

def build_onnx(net: DlibResNet, source_sha256: str = "") -> onnx.ModelProto:
    """The network as ONNX: input (N, 3, 150, 150) float32, already (pixel - mean) / 256."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_architecture(net)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = iter(range(10_000))

    def name(prefix: str) -> str:
        return f"{prefix}_{next(counter)}"

    def const(array: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), n))
        return n

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    layers = iter(net.layers)
    # Shapes are tracked to reproduce add_prev's zero padding of the smaller input.
    size, channels = net.chip_size, 3

    def conv(x: str, layer: Layer) -> str:
        nonlocal size, channels
        p = layer.params
        (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["pad"]
        out = node("Conv", [x, const(p["w"], "w"), const(p["b"], "b")],
                   kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw])
        size = 1 + (size + 2 * ph - kh) // sh
        channels = p["w"].shape[0]
        return out

    def affine(x: str, layer: Layer) -> str:
        gamma = layer.params["gamma"].reshape(1, -1, 1, 1)
        beta = layer.params["beta"].reshape(1, -1, 1, 1)
        return node("Add", [node("Mul", [x, const(gamma, "gamma")]), const(beta, "beta")])

    def pool(x: str, layer: Layer) -> str:
        nonlocal size
        (kh, kw), (sh, sw), (ph, pw) = layer.params["kernel"], layer.params["stride"], layer.params["pad"]
        if kh == 0:  # avg_pool_everything
            size = 1
            return node("GlobalAveragePool", [x])
        op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
        size = 1 + (size + 2 * ph - kh) // sh
        return node(op, [x], kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw])

    def pad(t: str, s: int, c: int, out_s: int, out_c: int) -> str:
        if (s, c) == (out_s, out_c):
            return t
        pads = np.array([0, 0, 0, 0, 0, out_c - c, out_s - s, out_s - s], dtype=np.int64)
        return node("Pad", [t, const(pads, "pads")])

    def apply(x: str, layer: Layer) -> str:
        if layer.kind == "con":
            return conv(x, layer)
        if layer.kind == "affine":
            return affine(x, layer)
        if layer.kind == "relu":
            return node("Relu", [x])
        return pool(x, layer)

    x = INPUT_NAME
    for _ in _STEM:
        x = apply(x, next(layers))
    for _, down in _BLOCKS:
        block_in, in_size, in_channels = x, size, channels
        for _ in range(5):
            x = apply(x, next(layers))
        block_size, block_channels = size, channels
        skip, skip_size, skip_channels = block_in, in_size, in_channels
        if down:  # the skip path: avg_pool of the block's input (skip1 -> tag1)
            size = in_size
            skip = apply(block_in, next(layers))
            skip_size = size
        size, channels = block_size, block_channels
        if next(layers).kind != "add_prev":
            raise DlibFormatError("layout changed under the converter")
        # dlib's add_prev adds tensors of different sizes as if the smaller one were
        # zero-padded at the end of each dimension: output is the larger of the two.
        out_size, out_channels = max(size, skip_size), max(channels, skip_channels)
        x = node("Add", [pad(x, size, channels, out_size, out_channels),
                         pad(skip, skip_size, skip_channels, out_size, out_channels)])
        size, channels = out_size, out_channels
        x = apply(x, next(layers))  # relu
    x = apply(x, next(layers))  # avg_pool_everything
    fc = next(layers)
    flat = node("Flatten", [x], axis=1)
    if fc.params["b"] is None:
        x = node("MatMul", [flat, const(fc.params["w"], "fc_w")])
    else:
        x = node("Gemm", [flat, const(fc.params["w"], "fc_w"), const(fc.params["b"], "fc_b")])
    nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="output"))
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1", [
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3, net.chip_size, net.chip_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", fc.params["w"].shape[1]])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="faceaudit.engine.dlib_onnx",
                              producer_version=CONVERTER_VERSION,
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime faceaudit supports
    helper.set_model_props(model, {"source_sha256": source_sha256, "converter_version": CONVERTER_VERSION,
                                   "input_means": ",".join(repr(m) for m in net.input_means)})
    onnx.checker.check_model(model)
    return model


# -- preprocessing: input_rgb_image_sized<150>::to_tensor ----------------------------------------

def chips_to_tensor(chips: list[np.ndarray] | np.ndarray, means: tuple[float, float, float]) -> np.ndarray:
    """RGB uint8 chips (N, 150, 150, 3) -> (N, 3, 150, 150) float32 as dlib's input layer makes them:
    (pixel - mean) / 256 per channel, the subtraction in float32 (dlib's avg_* are floats)."""
    batch = np.asarray(chips if isinstance(chips, np.ndarray) else np.stack(chips))
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError("chips must be uint8 (N, H, W, 3) RGB")
    tensor = batch.astype(np.float32) - np.asarray(means, dtype=np.float32)
    tensor /= np.float32(256.0)  # a power of two: exact, as dlib's division in double then cast
    return np.ascontiguousarray(tensor.transpose(0, 3, 1, 2))


# -- conversion with a cache ---------------------------------------------------------------------

def cache_dir() -> Path:
    """Where converted models are kept: faceaudit.settings.Settings.cache_root()."""
    return Settings.from_env().cache_root()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ConvertedModel:
    path: Path
    input_means: tuple[float, float, float]
    source_sha256: str


def _read_props(path: Path) -> dict[str, str]:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def converted_model(source: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None
                    ) -> ConvertedModel:
    """The ONNX conversion of dlib model file ``source``, converting on first use.

    The cached file is named by the source's SHA-256 and the converter version,
    written to a temporary file in the same directory and renamed into place
    (atomic on POSIX): a concurrent first use in another process either sees no
    file and converts too, or sees a complete one; both write identical bytes.
    """
    digest = sha256_file(source)
    folder = Path(directory) if directory is not None else cache_dir()
    target = folder / f"dlib_face_recognition_resnet_v1-{digest[:16]}-c{CONVERTER_VERSION}.onnx"
    if target.is_file():
        try:
            props = _read_props(target)
            if props.get("source_sha256") == digest and props.get("converter_version") == CONVERTER_VERSION:
                means = tuple(float(m) for m in props["input_means"].split(","))
                return ConvertedModel(target, means, digest)  # type: ignore[arg-type]
        except Exception as error:  # a truncated or foreign file: convert again
            log.warning("ignoring unreadable cached model %s: %s", target, error)
    net = read_dlib_resnet(Path(source).read_bytes())
    model = build_onnx(net, digest)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    log.info("converted %s to %s", source, target)
    return ConvertedModel(target, net.input_means, digest)

