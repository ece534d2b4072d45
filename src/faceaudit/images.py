"""Image input for every operation: raw bytes or a file in, RGB pixels out.

Every way an image can be unusable is reported as the Rekognition error for it
(faceaudit.errors). Pillow does all the decoding; this module only decides
which of its decoders may run on untrusted input and bounds what they may cost:
pixels and decoded bytes per image (checked on the header), decoded bytes of
all decodes running at once (a process-wide budget), and the size the models
see (images are shrunk to WORKING_MAX_SIDE, JPEGs already while decoding).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Union

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from faceaudit.errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
    InvalidS3ObjectException,
)

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Rekognition's limit on raw Image.Bytes
MIN_IMAGE_SIDE = 80  # Rekognition's minimum width and height, in pixels
# Decompression-bomb guards, both checked on the header before any pixel is decoded.
# 5 MB of JPEG can legitimately hold a 24-36 MP camera photo (a 12 MP 4000x3000
# phone photo is far inside), while a few KB of PNG could otherwise claim gigabytes.
MAX_IMAGE_PIXELS = 40_000_000
# Pixels alone do not bound the cost: a 40 MP 16-bit RGBA PNG is 320 MB of samples.
# The limit is the bytes the decoder must produce (channels x bit depth, at the scale
# it decodes: JPEGs decode shrunk, see WORKING_MAX_SIDE). 3 bytes x the pixel cap
# admits every 8-bit RGB image the pixel cap admits and nothing costlier
# (docs/engine.md, "Image input"). Decoders' scratch memory (libjpeg's coefficients for
# progressive JPEGs, libwebp's canvas) is not refused for: it counts in the budget below.
MAX_DECODED_BYTES = 3 * MAX_IMAGE_PIXELS
# All decodes in the process at once (server threads, audit workers) share this budget
# of reserved peak bytes: two PNGs or JPEGs at the limit (2 cores could not decode more in
# parallel anyway; a WebP there holds three buffers and runs alone), any number of
# ordinary ones. A burst of bombs waits instead of taking all memory.
DECODE_BUDGET_BYTES = 2 * MAX_DECODED_BYTES
# The models never need more: MTCNN searches at <= 1024 px (engine.dlib_engine), so the
# smallest face it finds (20 px there) is 40 px here -- Rekognition's own minimum face
# in a 1920x1080 image. Larger images are shrunk to fit WORKING_MAX_SIDE x
# WORKING_MAX_SIDE; face boxes and landmarks are ratios of width and height, so
# answers keep their meaning in the original image.
WORKING_MAX_SIDE = 2048

# Rekognition accepts JPEG and PNG only; WebP is a faceaudit extension because
# Pillow decodes it as cheaply. No other Pillow decoder ever sees input.
_FORMATS = ("JPEG", "PNG", "WEBP")
_FORMAT_NAMES = "JPEG, PNG or WebP"
# Pillow opens multi-picture JPEGs (what many cameras write) as MPO: still JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, "LoadedImage"]


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare sha256
class LoadedImage:
    """A decoded image, upright (EXIF orientation applied), as 8-bit RGB.

    ``width`` and ``height`` are those of ``pixels``: the working copy, shrunk to fit
    WORKING_MAX_SIDE if the image was larger. Everything measured on ``pixels`` and
    divided by them (Rekognition's ratios) describes the original image as well.
    """

    pixels: np.ndarray = field(repr=False)  # H x W x 3, uint8, C-contiguous, read-only
    width: int
    height: int
    format: str  # "JPEG", "PNG" or "WEBP"
    sha256: str  # hex digest of the raw input bytes; the audit caches by it
    original_width: int = 0  # upright size of the image as sent; 0: same as width/height
    original_height: int = 0

    def __post_init__(self) -> None:
        if not self.original_width or not self.original_height:
            object.__setattr__(self, "original_width", self.width)
            object.__setattr__(self, "original_height", self.height)


def load_image(source: Source) -> LoadedImage:
    """Decode ``source`` (bytes, a file path, or an already loaded image)."""
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = _bytes_from_buffer(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _read_file(source, InvalidParameterException, f"Image file {_show(source)}")
    else:
        raise InvalidParameterException(
            f"Image must be bytes, a file path or a LoadedImage, not {type(source).__name__}")
    return _decode(data)


def image_bytes_from_request(image: Mapping, *, bucket_dir: str | None = None) -> bytes:
    """The raw bytes of a Rekognition ``Image`` structure (``Bytes`` or ``S3Object``)."""
    if not isinstance(image, Mapping):
        raise InvalidParameterException("Image must be a structure with Bytes or S3Object")
    has_bytes = image.get("Bytes") is not None
    has_s3 = image.get("S3Object") is not None
    if has_bytes == has_s3:
        raise InvalidParameterException("Image must have exactly one of Bytes or S3Object")
    if has_bytes:
        data = image["Bytes"]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidParameterException(
                f"Image.Bytes must be binary data, not {type(data).__name__}")
        return bytes(data)
    if bucket_dir is None:
        raise InvalidParameterException(
            "S3Object images are not supported: no bucket directory is configured; "
            "send the image as Image.Bytes")
    return _read_s3_object(image["S3Object"], bucket_dir)


def _bytes_from_buffer(source: bytes | bytearray | memoryview) -> bytes:
    size = source.nbytes if isinstance(source, memoryview) else len(source)
    _check_size(size, "Image")
    # Copy mutable buffers so the digest and the pixels describe the same bytes.
    return source if isinstance(source, bytes) else bytes(source)


def _check_size(size: int, what: str) -> None:
    if size == 0:
        raise InvalidImageFormatException(f"{what} is empty (0 bytes)")
    if size > MAX_IMAGE_BYTES:
        raise ImageTooLargeException(
            f"{what} is {size} bytes; the limit is {MAX_IMAGE_BYTES} bytes (5 MB)")


def _read_file(path: str | os.PathLike, error: type, what: str) -> bytes:
    """At most MAX_IMAGE_BYTES + 1 bytes of a regular file; ``error`` if it can't be read."""
    # O_NONBLOCK: opening a FIFO must not hang the request; no effect on regular files.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory, not a file") from None
    except (OSError, ValueError) as exc:  # permissions, NUL in the name, name too long...
        raise error(f"{what} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{what} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} is not a regular file")
        _check_size(st.st_size, what)  # before reading: a huge file is never read
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise error(f"{what} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    _check_size(len(data), what)  # the file may have changed since fstat
    return data


def _read_s3_object(s3: object, bucket_dir: str) -> bytes:
    # bucket_dir/<Bucket>/<Name> stands in for S3; nothing outside bucket_dir is reachable.
    if not isinstance(s3, Mapping):
        raise InvalidParameterException("S3Object must be a structure with Bucket and Name")
    bucket, name = s3.get("Bucket"), s3.get("Name")
    if not isinstance(bucket, str) or not bucket or not isinstance(name, str) or not name:
        raise InvalidParameterException("S3Object needs a non-empty Bucket and Name")
    if s3.get("Version") is not None:
        raise InvalidParameterException("S3Object.Version is not supported")
    separators = {s for s in ("/", os.sep, os.altsep) if s is not None}  # altsep: None on POSIX
    name_parts = name.replace(os.sep, "/").replace(os.altsep or "/", "/").split("/")
    if (bucket in (".", "..") or any(s in bucket for s in separators) or "\0" in bucket + name
            or os.path.isabs(name) or os.path.splitdrive(name)[0] or ".." in name_parts):
        raise InvalidParameterException(
            f"S3Object Bucket {bucket!r} / Name {name!r} is not a valid object location")
    root = os.path.realpath(bucket_dir)
    target = os.path.realpath(os.path.join(root, bucket, name))
    if os.path.commonpath([root, target]) != root or target == root:
        raise InvalidParameterException(
            f"S3Object Bucket {bucket!r} / Name {name!r} is outside the bucket directory")
    # Messages name the S3 location only: the server's directories are not the caller's business.
    return _read_file(target, InvalidS3ObjectException, f"S3 object s3://{bucket}/{name}")


@contextmanager
def _pillow_errors(fmt: str | None = None) -> Iterator[None]:
    """Any failure inside Pillow while decoding untrusted bytes is a bad image, not a crash."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own (global, higher) limit fired before ours could.
        raise ImageTooLargeException(
            f"Image declares more than the {MAX_IMAGE_PIXELS:,}-pixel limit ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # OSError, ValueError, SyntaxError, struct.error, ...
        what = f"{fmt} image" if fmt else "Image"
        raise InvalidImageFormatException(
            f"{what} is corrupt or truncated: {type(exc).__name__}: {exc}") from exc


def _decode(data: bytes) -> LoadedImage:
    with _open(data) as img:
        fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
        if fmt not in _FORMATS:  # cannot happen with formats= above; never trust it blindly
            raise InvalidImageFormatException(f"Unsupported image format {img.format}")
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeException(
                f"Image is {width}x{height} = {width * height:,} pixels; "
                f"the limit is {MAX_IMAGE_PIXELS:,} pixels")
        cost, scratch = _decoded_bytes(img, fmt, data)  # JPEG: also draft()s it
        if cost > MAX_DECODED_BYTES:
            raise ImageTooLargeException(
                f"Image is {width}x{height} {img.mode} {fmt}: {cost:,} bytes to decode; "
                f"the limit is {MAX_DECODED_BYTES:,} bytes")
        with _DECODE_BUDGET.reserve(_peak_bytes(img, fmt, cost) + scratch):
            if fmt == "PNG":
                _check_png_stream(data)
            # Truncated data raises here as long as nobody set ImageFile.LOAD_TRUNCATED_IMAGES
            # (faceaudit never does; it is process-wide Pillow state).
            with _pillow_errors(fmt):
                img.load()
                orientation = _orientation(img)
                working = _shrink(_flatten(img))
            upright = _upright(working, orientation)
            pixels = _rgb_pixels(upright, fmt)
            del working, upright
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    if min(width, height) < MIN_IMAGE_SIDE:  # Rekognition's rule is about the image as sent
        raise InvalidParameterException(
            f"Image is {width}x{height} pixels; it must be at least "
            f"{MIN_IMAGE_SIDE} pixels per side")
    pixels.setflags(write=False)  # shared by cache and engine: nobody may change it
    return LoadedImage(pixels=pixels, width=pixels.shape[1], height=pixels.shape[0], format=fmt,
                       sha256=hashlib.sha256(data).hexdigest(),
                       original_width=width, original_height=height)


class _DecodeBudget:
    """A counting semaphore in bytes: a decode waits until its bytes fit in what is free."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._free = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        nbytes = min(nbytes, self.total)  # never more than all of it, or it would wait forever
        with self._free:
            self._free.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
        try:
            yield
        finally:
            if nbytes >= _TRIM_AFTER_BYTES:
                _release_freed_memory()
            with self._free:
                self.used -= nbytes
                self._free.notify_all()


_DECODE_BUDGET = _DecodeBudget(DECODE_BUDGET_BYTES)
_TRIM_AFTER_BYTES = 32 * 1024 * 1024


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None


def _release_freed_memory() -> None:
    # glibc keeps what a thread freed in that thread's arena: after large decodes on
    # several server threads, each kept ~200 MB (measured: +1.6 GB after six 40 MP
    # decodes, one at a time). malloc_trim hands it back to the system.
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _fit(width: int, height: int) -> tuple[int, int]:
    """``width`` x ``height`` shrunk (aspect kept) to fit WORKING_MAX_SIDE on both sides."""
    scale = WORKING_MAX_SIDE / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


# Decoded bytes per pixel of the modes Pillow opens JPEG and WebP in.
_MODE_BYTES = {"L": 1, "RGB": 3, "YCbCr": 3, "RGBA": 4, "CMYK": 4}
# PNG IHDR colour type -> channels (grey, RGB, palette, grey+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _decoded_bytes(img: Image.Image, fmt: str, data: bytes) -> tuple[int, int]:
    """Bytes the decoder must produce for ``img``, and its scratch bytes, from the header."""
    if fmt == "PNG":
        return _png_stream_bytes(data, filter_bytes=False), 0  # samples only, as for the others
    if fmt == "JPEG":
        full_width, full_height = img.size
        blocks, min_bits = _jpeg_blocks(img, data)
        if blocks * min_bits > 8 * (len(data) - _jpeg_scan_start(data)):
            raise InvalidImageFormatException(
                f"JPEG image is truncated: {full_width}x{full_height} needs at least "
                f"{blocks * min_bits // 8:,} bytes of scan data")
        # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: the full size is never held
        # when the working copy is smaller. (None: keep the mode as stored.)
        with _pillow_errors(fmt):
            img.draft(None, _fit(full_width, full_height))
        cost = img.size[0] * img.size[1] * _MODE_BYTES.get(img.mode, 4)
        # Progressive JPEGs keep every DCT coefficient (2 bytes each, full size, whatever
        # the scale) until the last scan: 40 MP 4:2:0 measured +153 MB, estimated 150.
        return cost, (2 * 64 * blocks if img.info.get("progressive") else 0)
    return img.size[0] * img.size[1] * _MODE_BYTES.get(img.mode, 4), 0


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _peak_bytes(img: Image.Image, fmt: str, cost: int) -> int:
    """What decoding ``img`` holds at its peak (measured: docs/engine.md), for the budget."""
    pixels = img.size[0] * img.size[1]
    if fmt == "WEBP":
        # Pillow decodes WebP through libwebp's animation API: an RGBA canvas, the frame
        # copied out of it, then Pillow's own image -- three full-size RGBA buffers.
        return 3 * 4 * pixels
    # Modes the shrinking cannot take as they are get one full-size copy (4 bytes a pixel).
    return cost + (0 if img.mode in ("L", "RGB", "RGBA") else 4 * pixels)


def _png_stream_bytes(data: bytes, filter_bytes: bool = True) -> int:
    """Length of the inflated pixel stream the IHDR declares: per row, a filter byte
    and the packed samples (bit depth included: 16-bit RGBA is 8 bytes a pixel)."""
    # Pillow's open() already checked the signature and that IHDR comes first.
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = _PNG_CHANNELS.get(colour, 4) * depth
    passes = [(width, height)] if not interlace else [
        (max(0, _ceil(width - x0, dx)), max(0, _ceil(height - y0, dy)))
        for x0, y0, dx, dy in _ADAM7]
    return sum(h * (filter_bytes + _ceil(w * bits, 8)) for w, h in passes if w and h)


def _check_png_stream(data: bytes) -> None:
    """Refuse a PNG whose compressed pixel stream ends before the image does.

    Pillow accepts such a file (rows after the stream's end stay black), so a few
    bytes could claim a 40 MP image. Inflating to count costs what Pillow's inflating
    costs, in 1 MB steps; a short stream is found as soon as it ends.
    """
    expected = _png_stream_bytes(data)
    inflater = zlib.decompressobj()
    produced, pos = 0, 8
    while pos + 8 <= len(data) and not inflater.eof:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            pending = data[pos + 8:pos + 8 + length]
            while pending and not inflater.eof:
                try:
                    produced += len(inflater.decompress(pending, 1 << 20))
                except zlib.error as exc:
                    raise InvalidImageFormatException(f"PNG image is corrupt: {exc}") from None
                if produced >= expected:
                    return  # the whole image is there; Pillow decodes (and checks) the rest
                pending = inflater.unconsumed_tail
        pos += 12 + length
    raise InvalidImageFormatException(
        f"PNG image is truncated: its pixel data ends after {produced:,} of the "
        f"{expected:,} bytes its header declares")


# SOF markers of Huffman-coded JPEGs -> the fewest bits one 8x8 block can take: a DC
# code and an end-of-block code of at least 1 bit each (sequential), or a DC code in the
# first scan (progressive: later scans may skip whole runs of blocks).
_JPEG_MIN_BLOCK_BITS = {0xC0: 2, 0xC1: 2, 0xC2: 1}


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, offset of its payload, payload length) of each header segment, up to SOS."""
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no payload
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        yield marker, pos + 4, length - 2
        if marker == 0xDA:
            return
        pos += 2 + length


def _jpeg_scan_start(data: bytes) -> int:
    for marker, payload, length in _jpeg_segments(data):
        if marker == 0xDA:
            return payload + length
    return len(data)


def _jpeg_blocks(img: Image.Image, data: bytes) -> tuple[int, int]:
    """8x8 blocks of all components, and the fewest bits each can be coded in (0: unknown)."""
    sof = next((m for m, _, _ in _jpeg_segments(data) if 0xC0 <= m <= 0xCF
                and m not in (0xC4, 0xC8, 0xCC)), None)
    width, height = img.size
    sampling = [(h, v) for _, h, v, _ in getattr(img, "layer", [])] or [(1, 1)]
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    blocks = sum(_ceil(_ceil(width * h, h_max), 8) * _ceil(_ceil(height * v, v_max), 8)
                 for h, v in sampling)
    return blocks, _JPEG_MIN_BLOCK_BITS.get(sof or 0, 0)


def _open(data: bytes) -> Image.Image:
    with _pillow_errors():
        try:
            # formats= restricts Image.open to these decoders; it reads only the header.
            return Image.open(io.BytesIO(data), formats=_FORMATS)
        except UnidentifiedImageError:
            pass  # none of our decoders accepts it: say below what it is instead
    raise _unsupported(data)


def _unsupported(data: bytes) -> InvalidImageFormatException:
    # Name what it is, using Pillow's own signature checks (prefix tests, no decoding).
    Image.init()
    detected = None
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(data[:16]):
                detected = _FORMAT_ALIASES.get(name, name)
                break
        except Exception:
            continue
    if detected in _FORMATS:
        return InvalidImageFormatException(f"Image is not a valid {detected} (corrupt header)")
    if detected:
        return InvalidImageFormatException(
            f"Unsupported image format {detected}; the image must be {_FORMAT_NAMES}")
    return InvalidImageFormatException(
        f"Image format not recognized; the image must be {_FORMAT_NAMES}")


# EXIF Orientation -> the turn that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_SWAPS_SIDES = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int:
    # A broken EXIF block says nothing trustworthy about orientation: keep the pixels
    # as stored. Broken includes tags Pillow reads but cannot write back (found by
    # fuzzing: ImageOps.exif_transpose fails on those, so it is what we asked before).
    try:
        exif = img.getexif()
        value = exif.get(ExifTags.Base.Orientation, 1)
        if value != 1:
            exif.tobytes()
    except Exception:  # whatever Pillow raises on broken EXIF: as stored
        return 1
    return value if value in _UPRIGHT else 1


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    """Apply EXIF orientation (to the working copy: cheaper), so sides are as a viewer shows."""
    if orientation == 1:
        return img  # the common case: no copy
    return img.transpose(_UPRIGHT[orientation])


def _flatten(img: Image.Image) -> Image.Image:
    """``img`` in L, RGB or RGBA, the modes Pillow's resize works in; alpha kept."""
    if img.mode.startswith("I"):  # 16-bit grey: I;16*, or I for some PNGs
        # Pillow's convert() clips 16-bit values to 255; keep the high byte instead.
        wide = np.asarray(img)
        high = (np.clip(wide, 0, 65535) >> 8) if wide.dtype.kind == "i" else wide >> 8
        return Image.fromarray(high.astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return img if img.mode == "RGBA" else img.convert("RGBA")
    if img.mode == "1":
        return img.convert("L")
    return img if img.mode in ("L", "RGB") else img.convert("RGB")  # P, CMYK, YCbCr...


def _shrink(img: Image.Image) -> Image.Image:
    """The working copy: ``img`` shrunk to fit WORKING_MAX_SIDE, or ``img`` itself."""
    size = _fit(*img.size)
    if size == img.size:
        return img
    # reducing_gap: Pillow first averages whole blocks (reduce()), then resamples what is
    # left. 1.0 reduces as far as whole blocks go: 6300 -> 2048 px took 0.42 s against
    # 1.5 s at 2.0 (where no block reduction happens below a factor of 4), for a mean
    # pixel difference of 0.24 against 0.12 (of 255) from a direct BICUBIC resize.
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)


def _rgb_pixels(img: Image.Image, fmt: str) -> np.ndarray:
    with _pillow_errors(fmt):
        if img.mode == "RGBA":
            # Composite over white: dropping alpha would turn transparent pixels black,
            # which detectors read as a dark face-like region.
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, img).convert("RGB")
        else:
            rgb = img.convert("RGB")  # L, or RGB: a copy even if already RGB
        pixels = np.asarray(rgb)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _show(path: str | os.PathLike) -> str:
    return os.fsdecode(os.fspath(path))
