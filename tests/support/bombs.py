"""Images that cost far more to decode than their size says, built byte by byte.

Shared by tests/test_images.py, tests/server/test_image_limits.py and
benchmarks/image_bombs.py. Each matches a finding of issue 8.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


class _Bits:
    """LSB-first bit writer (VP8L's order)."""

    def __init__(self) -> None:
        self.value, self.count = 0, 0

    def put(self, value: int, bits: int) -> None:
        self.value |= value << self.count
        self.count += bits

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def webp_bomb(width: int = 6300, height: int = 6300) -> bytes:
    """A lossless WebP (VP8L) of width x height transparent pixels in about 34 bytes.

    Every prefix code has a single symbol, so each pixel costs zero bits.
    """
    bits = _Bits()
    bits.put(width - 1, 14)
    bits.put(height - 1, 14)
    bits.put(1, 1)  # alpha is used
    bits.put(0, 3)  # version 0
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # no meta prefix codes
    for _ in range(5):  # green, red, blue, alpha, distance: one-symbol simple codes
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        bits.put(0, 1)  # its value fits in 1 bit
        bits.put(0, 1)  # symbol 0
    payload = b"\x2f" + bits.bytes()
    if len(payload) % 2:
        payload += b"\x00"
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, depth: int, colour: int, stream: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", stream)
            + png_chunk(b"IEND", b""))


def zero_stream(row_bytes: int, height: int) -> bytes:
    """A zlib stream of ``height`` all-zero rows (filter byte included), made in O(row) time."""
    row = b"\x00" * (1 + row_bytes)
    rows = next(k for k in range(min(height, 256), 0, -1) if height % k == 0)
    z = zlib.compressobj(9)
    first = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    # A full flush resets the dictionary, so every further block compresses identically.
    block = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    tail = z.flush()
    n = len(row) * height  # adler32 of n zero bytes is (n mod 65521) << 16 | 1
    return first + block * (height // rows - 1) + tail[:-4] + struct.pack(">I", (n % 65521) << 16 | 1)


def png16_bomb(width: int = 6300, height: int = 6300) -> bytes:
    """A complete, valid 16-bit RGBA PNG of zeros (8 bytes a pixel: 318 MB at 6300x6300)."""
    return png(width, height, 16, 6, zero_stream(8 * width, height))


def truncated_png(width: int = 6300, height: int = 6300) -> bytes:
    """An 8-bit RGB PNG declaring width x height whose pixel stream ends after two rows."""
    return png(width, height, 8, 2, zlib.compress(b"\x00" * (1 + 3 * width) * 2, 9))


def patched_jpeg(jpeg: bytes, width: int = 6300, height: int = 6300) -> bytes:
    """``jpeg`` with its baseline frame header claiming width x height."""
    sof = jpeg.find(b"\xff\xc0")
    assert sof > 0, "needs a baseline JPEG"
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def lossless_webp(width: int, height: int, mode: str = "RGB") -> bytes:
    """A real lossless WebP of one colour (Pillow's encoder), a few KB at any size."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (40, 80, 120)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()
