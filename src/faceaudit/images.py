"""Image input for every operation: raw bytes or a file in, RGB pixels out.

Every way an image can be unusable is reported as the Rekognition error for it
(faceaudit.errors). Pillow does all the decoding; this module only decides
which of its decoders may run on untrusted input and bounds what they may cost.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from faceaudit.errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
    InvalidS3ObjectException,
)

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Rekognition's limit on raw Image.Bytes
MIN_IMAGE_SIDE = 80  # Rekognition's minimum width and height, in pixels
# Decompression-bomb guard, checked on the header before any pixel is decoded.
# 5 MB of JPEG can legitimately hold a 24-36 MP camera photo (a 12 MP 4000x3000
# phone photo is far inside); 40 MP bounds the decoded RGB at ~120 MB per request,
# while a few KB of PNG could otherwise claim gigabytes.
MAX_IMAGE_PIXELS = 40_000_000

# Rekognition accepts JPEG and PNG only; WebP is a faceaudit extension because
# Pillow decodes it as cheaply. No other Pillow decoder ever sees input.
_FORMATS = ("JPEG", "PNG", "WEBP")
_FORMAT_NAMES = "JPEG, PNG or WebP"
# Pillow opens multi-picture JPEGs (what many cameras write) as MPO: still JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, "LoadedImage"]


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare sha256
class LoadedImage:
    """A decoded image, upright (EXIF orientation applied), as 8-bit RGB."""

    pixels: np.ndarray = field(repr=False)  # H x W x 3, uint8, C-contiguous, read-only
    width: int
    height: int
    format: str  # "JPEG", "PNG" or "WEBP"
    sha256: str  # hex digest of the raw input bytes; the audit caches by it


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
    separators = {"/", os.sep, os.altsep} - {None}
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
        fmt = _FORMAT_ALIASES.get(img.format, img.format)
        if fmt not in _FORMATS:  # cannot happen with formats= above; never trust it blindly
            raise InvalidImageFormatException(f"Unsupported image format {img.format}")
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeException(
                f"Image is {width}x{height} = {width * height:,} pixels; "
                f"the limit is {MAX_IMAGE_PIXELS:,} pixels")
        # Truncated data raises here as long as nobody set ImageFile.LOAD_TRUNCATED_IMAGES
        # (faceaudit never does; it is process-wide Pillow state).
        with _pillow_errors(fmt):
            img.load()
        upright = _upright(img)
        pixels = _rgb_pixels(upright, fmt)
    height, width = pixels.shape[:2]
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InvalidParameterException(
            f"Image is {width}x{height} pixels; it must be at least "
            f"{MIN_IMAGE_SIDE} pixels per side")
    pixels.setflags(write=False)  # shared by cache and engine: nobody may change it
    return LoadedImage(pixels=pixels, width=width, height=height, format=fmt,
                       sha256=hashlib.sha256(data).hexdigest())


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


def _upright(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation, so width and height are what a viewer shows."""
    # A broken EXIF block says nothing trustworthy about orientation: keep the pixels as
    # stored. (Not in_place: a failure halfway would leave it unknown whether they turned.)
    try:
        if img.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            return img  # the common case: no copy
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def _rgb_pixels(img: Image.Image, fmt: str) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert() clips 16-bit values to 255; keep the high byte instead.
        with _pillow_errors(fmt):
            wide = np.asarray(img)
        gray = (np.clip(wide, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    with _pillow_errors(fmt):
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            # Composite over white: dropping alpha would turn transparent pixels black,
            # which detectors read as a dark face-like region.
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            rgb = img.convert("RGB")  # L, 1, P, CMYK, YCbCr... ; a copy even if already RGB
        pixels = np.asarray(rgb)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _show(path: str | os.PathLike) -> str:
    return os.fsdecode(os.fspath(path))
