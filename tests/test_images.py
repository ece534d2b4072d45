"""faceaudit.images: every image is generated here (Pillow, numpy, skimage's astronaut)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin
from skimage import data as skdata

from faceaudit import errors
from faceaudit import images as images_module
from faceaudit.images import (
    DECODE_BUDGET_BYTES,
    MAX_DECODED_BYTES,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    WORKING_MAX_SIDE,
    LoadedImage,
    image_bytes_from_request,
    load_image,
)
from support import bombs


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())  # 512x512 RGB, public domain


@pytest.fixture(scope="module")
def jpeg(astronaut) -> bytes:
    return encode(astronaut, "JPEG", quality=90)


@pytest.fixture(scope="module")
def png(astronaut) -> bytes:
    return encode(astronaut, "PNG")


def raises(cls, fn, *args, **kw):
    """Run fn, assert it raised exactly ``cls`` with Rekognition's code; return the error."""
    with pytest.raises(errors.RekognitionError) as info:
        fn(*args, **kw)
    assert type(info.value) is cls
    assert info.value.code == cls.__name__
    return info.value


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height pixels, compressed to a few KB."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    rows = next(k for k in range(min(height, 1000), 0, -1) if height % k == 0)
    z = zlib.compressobj(9)
    first = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    # A full flush resets the dictionary, so every further block compresses identically.
    block = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    tail = z.flush()
    n = len(row) * height  # adler32 of n zero bytes is (n mod 65521) << 16 | 1
    adler = struct.pack(">I", (n % 65521) << 16 | 1)
    idat = first + block * (height // rows - 1) + tail[:-4] + adler
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


# --- good input ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_formats_from_bytes_and_path(fmt, astronaut, tmp_path):
    data = encode(astronaut, fmt)
    path = tmp_path / f"face.{fmt.lower()}"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        image = load_image(source)
        assert image.format == fmt
        assert (image.width, image.height) == (512, 512)
        assert image.pixels.shape == (512, 512, 3)
        assert image.pixels.dtype == np.uint8
        assert image.pixels.flags.c_contiguous
        assert image.sha256 == hashlib.sha256(data).hexdigest()
    # Decoded, not invented: close to the original astronaut (lossy formats allowed some error).
    diff = np.abs(image.pixels.astype(int) - np.asarray(astronaut, dtype=int)).mean()
    assert diff < 6


def test_bytearray_memoryview_and_loaded_image(jpeg):
    a, b = load_image(bytearray(jpeg)), load_image(memoryview(jpeg))
    assert a.sha256 == b.sha256 == hashlib.sha256(jpeg).hexdigest()
    assert np.array_equal(a.pixels, b.pixels)
    assert isinstance(a, LoadedImage)
    assert load_image(a) is a


def test_pixels_are_read_only(jpeg):
    image = load_image(jpeg)
    with pytest.raises(ValueError):
        image.pixels[0, 0, 0] = 1
    assert "pixels" not in repr(image)


def test_exif_orientation_applied():
    # 200 wide, 100 high: left half red, right half blue. Orientation 6 means "rotate 90
    # degrees clockwise to display", so the viewer sees 100 wide, 200 high, red on top.
    img = Image.new("RGB", (200, 100), "blue")
    img.paste((255, 0, 0), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert (image.width, image.height) == (100, 200)
    assert image.pixels.shape == (200, 100, 3)
    top, bottom = image.pixels[50, 50], image.pixels[150, 50]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def _exif_with_bad_tag(tag: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "Camera"  # Make, an ASCII string; renumbered below to a numeric tag
    raw = exif.tobytes()
    assert raw[6:8] == b"MM"  # big-endian, so the entry starts with tag, type = 0x010F, 2
    return raw.replace(b"\x01\x0f\x00\x02", struct.pack(">HH", tag, 2))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data", "ignore:Truncated File Read")
@pytest.mark.parametrize("exif", [
    b"Exif\x00\x00" + b"\x01\x02garbage" * 5,
    b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # first IFD offset far past the end
    b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00",  # cut short
    # Found by fuzzing: Orientation 6 readable, but a tag of the wrong type makes
    # ImageOps.exif_transpose raise (struct.error, TypeError) while rewriting the EXIF.
    _exif_with_bad_tag(0x0107),
    _exif_with_bad_tag(0x011A),
], ids=["garbage", "offset-past-end", "cut-short", "struct-error", "type-error"])
def test_corrupt_exif_is_ignored(exif):
    data = encode(Image.new("RGB", (200, 100), "red"), "JPEG", exif=exif)
    image = load_image(data)
    assert (image.width, image.height) == (200, 100)  # loaded as stored, not turned


def _rgba() -> Image.Image:
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # transparent black...
    img.paste((10, 20, 30, 255), (0, 0, 50, 100))  # ...left half opaque
    return img


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (100, 100), 0)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    img.paste(1, (0, 0, 50, 100))
    img.info["transparency"] = 0
    return img


@pytest.mark.parametrize("make, fmt, left, right", [
    (_rgba, "PNG", (10, 20, 30), (255, 255, 255)),  # transparent becomes white, not black
    (_rgba, "WEBP", (10, 20, 30), (255, 255, 255)),
    (lambda: _rgba().convert("LA"), "PNG", None, (255, 255, 255)),
    (_palette_with_transparency, "PNG", (10, 20, 30), (255, 255, 255)),
    (lambda: Image.new("L", (100, 100), 77), "PNG", (77, 77, 77), (77, 77, 77)),
    (lambda: Image.new("L", (100, 100), 77), "JPEG", (77, 77, 77), (77, 77, 77)),
    (lambda: Image.new("1", (100, 100), 1), "PNG", (255, 255, 255), (255, 255, 255)),
    (lambda: Image.new("RGB", (100, 100), (200, 10, 10)).quantize(4), "PNG",
     (200, 10, 10), (200, 10, 10)),
    (lambda: Image.new("CMYK", (100, 100), (0, 255, 255, 0)), "JPEG", (255, 0, 0), (255, 0, 0)),
], ids=["RGBA-png", "RGBA-webp", "LA", "P-transparent", "L-png", "L-jpeg", "1-bit", "P",
        "CMYK-jpeg"])
def test_modes_become_8bit_rgb(make, fmt, left, right):
    source = make()
    image = load_image(encode(source, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert image.pixels.shape == (100, 100, 3) and image.pixels.dtype == np.uint8
    tolerance = 3 if fmt == "JPEG" else 0
    for expected, x in ((left, 10), (right, 90)):
        if expected is not None:
            error = np.abs(image.pixels[50, x].astype(int) - expected).max()
            assert error <= tolerance, source.mode


def test_16bit_png_keeps_the_high_byte():
    gray = np.full((100, 100), 40000, np.uint16)
    gray[:, 50:] = 0x1234
    data = encode(Image.fromarray(gray), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image = load_image(data)
    assert image.format == "PNG"
    assert tuple(image.pixels[0, 0]) == (40000 >> 8,) * 3  # not clipped to 255
    assert tuple(image.pixels[0, 99]) == (0x12,) * 3


def test_multi_picture_jpeg_is_jpeg(astronaut):
    data = encode(astronaut, "MPO", save_all=True, append_images=[astronaut.rotate(90)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert load_image(data).format == "JPEG"


def test_minimum_size():
    image = load_image(encode(Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)), "PNG"))
    assert (image.width, image.height) == (80, 80)
    for size in ((79, 200), (200, 79)):
        error = raises(errors.InvalidParameterException, load_image,
                       encode(Image.new("RGB", size), "PNG"))
        assert "at least 80 pixels per side" in str(error)


# --- refused input ------------------------------------------------------------------------

def test_empty_bytes_and_file(tmp_path):
    for source in (b"", bytearray(), memoryview(b"")):
        assert "empty" in str(raises(errors.InvalidImageFormatException, load_image, source))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "empty" in str(raises(errors.InvalidImageFormatException, load_image, empty))


def test_too_large_bytes():
    big = b"\xff\xd8\xff\xe0" + os.urandom(6 * 1024 * 1024)
    raises(errors.ImageTooLargeException, load_image, big)
    raises(errors.ImageTooLargeException, load_image, memoryview(big))
    # Exactly at the limit is not "too large" (it fails for being noise instead).
    raises(errors.InvalidImageFormatException, load_image, big[:MAX_IMAGE_BYTES])


def test_too_large_file_is_not_read(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(1 << 30)  # 1 GiB, sparse: costs nothing unless someone reads it
    rss = _max_rss()
    start = time.perf_counter()
    raises(errors.ImageTooLargeException, load_image, path)
    assert time.perf_counter() - start < 1
    assert _max_rss() - rss < 200 * 1024 * 1024


def _max_rss() -> int:
    try:
        import resource
    except ImportError:  # Windows
        return 0
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@pytest.mark.parametrize("data", [
    b"hello, this is not an image\n" * 10,
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 5,
])
def test_not_an_image(data):
    error = raises(errors.InvalidImageFormatException, load_image, data)
    assert "not recognized" in str(error)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_unsupported_formats_are_named(fmt, astronaut):
    small = astronaut.resize((128, 128))  # valid picture; small keeps GIF quantizing fast
    error = raises(errors.InvalidImageFormatException, load_image, encode(small, fmt))
    assert f"Unsupported image format {fmt}" in str(error)


@pytest.mark.parametrize("fmt, keep", [
    ("JPEG", 0.5), ("JPEG", 0.01), ("PNG", 0.5), ("WEBP", 0.5),
])
def test_truncated(fmt, keep, astronaut):
    data = encode(astronaut, fmt)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    raises(errors.InvalidImageFormatException, load_image, data[: int(len(data) * keep)])


def test_corrupt_jpeg(jpeg):
    dht = jpeg.find(b"\xff\xc4")  # first Huffman table: fill its code counts with 0xFF
    broken_huffman = jpeg[: dht + 4] + b"\xff" * 26 + jpeg[dht + 30:]
    error = raises(errors.InvalidImageFormatException, load_image, broken_huffman)
    assert "JPEG image is corrupt" in str(error)
    sof = jpeg.find(b"\xff\xc0")  # frame header claiming 0x0 pixels
    zero_size = jpeg[: sof + 5] + b"\x00\x00\x00\x00" + jpeg[sof + 9:]
    error = raises(errors.InvalidImageFormatException, load_image, zero_size)
    assert "not a valid JPEG" in str(error)


def test_corrupt_png(png):
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # inside IDAT
    raises(errors.InvalidImageFormatException, load_image, bytes(flipped))


@pytest.mark.parametrize("side", [8000, 20000])  # 64 MP: our limit; 400 MP: Pillow's too
def test_png_decompression_bomb(side, monkeypatch):
    assert side * side > MAX_IMAGE_PIXELS
    bomb = png_bomb(side, side)
    assert len(bomb) < 100_000
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: loads.append(self) or real_load(self))
    start = time.perf_counter()
    error = raises(errors.ImageTooLargeException, load_image, bomb)
    assert time.perf_counter() - start < 2
    assert loads == []  # refused on the header: no pixel was decoded
    # Ours names the size; Pillow's own guard (400 MP) fires inside Image.open first.
    expected = f"{side}x{side}" if side == 8000 else f"{MAX_IMAGE_PIXELS:,}-pixel limit"
    assert expected in str(error)


def test_png_text_chunk_bomb():
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (8 * 1024 * 1024), zip=True)  # 8 MB of text in a few KB
    data = encode(Image.new("RGB", (100, 100)), "PNG", pnginfo=info)
    assert len(data) < 100_000
    raises(errors.InvalidImageFormatException, load_image, data)


def test_bad_paths(tmp_path):
    missing = tmp_path / "nope.jpg"
    error = raises(errors.InvalidParameterException, load_image, missing)
    assert str(missing) in str(error) and "does not exist" in str(error)
    error = raises(errors.InvalidParameterException, load_image, str(tmp_path))
    assert str(tmp_path) in str(error) and "directory" in str(error)
    raises(errors.InvalidParameterException, load_image, "bad\0name.jpg")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    error = raises(errors.InvalidParameterException, load_image, fifo)
    assert "not a regular file" in str(error)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path, png):
    path = tmp_path / "secret.png"
    path.write_bytes(png)
    path.chmod(0)
    raises(errors.InvalidParameterException, load_image, path)


@pytest.mark.parametrize("source", [None, 123, 1.5, ["a.jpg"], {"Bytes": b"x"},
                                    np.zeros((100, 100, 3), np.uint8)])
def test_wrong_source_type(source):
    raises(errors.InvalidParameterException, load_image, source)


# --- Rekognition's Image structure ----------------------------------------------------------

def test_request_bytes(jpeg):
    assert image_bytes_from_request({"Bytes": jpeg}) == jpeg
    assert image_bytes_from_request({"Bytes": bytearray(jpeg)}) == jpeg
    assert image_bytes_from_request({"Bytes": b""}) == b""  # load_image reports it


@pytest.mark.parametrize("image", [
    {}, {"Bytes": None}, {"Bytes": b"x", "S3Object": {"Bucket": "b", "Name": "n"}},
    {"Bytes": "aGVsbG8="}, "not a dict", None,
])
def test_request_malformed(image):
    raises(errors.InvalidParameterException, image_bytes_from_request, image)


def test_request_s3_without_bucket_dir():
    error = raises(errors.InvalidParameterException, image_bytes_from_request,
                   {"S3Object": {"Bucket": "photos", "Name": "a.jpg"}})
    assert "S3Object images are not supported" in str(error)
    assert "bucket directory" in str(error)


@pytest.fixture
def buckets(tmp_path, png):
    root = tmp_path / "buckets"
    (root / "photos" / "2024").mkdir(parents=True)
    (root / "photos" / "2024" / "a.png").write_bytes(png)
    (tmp_path / "outside.png").write_bytes(png)
    (root / "photos" / "link.png").symlink_to(tmp_path / "outside.png")
    return root


def test_request_s3_reads_from_bucket_dir(buckets, png):
    s3 = {"Bucket": "photos", "Name": "2024/a.png"}
    assert image_bytes_from_request({"S3Object": s3}, bucket_dir=str(buckets)) == png


@pytest.mark.parametrize("s3", [
    {"Bucket": "photos", "Name": "../../outside.png"},
    {"Bucket": "photos", "Name": "2024/../../../outside.png"},
    {"Bucket": "photos", "Name": "/etc/passwd"},
    {"Bucket": "..", "Name": "outside.png"},
    {"Bucket": "photos/2024", "Name": "a.png"},
    {"Bucket": "photos", "Name": "link.png"},  # symlink pointing out of bucket_dir
    {"Bucket": "photos", "Name": "a\0.png"},
    {"Bucket": "", "Name": "a.png"},
    {"Bucket": "photos"},
    {"Bucket": "photos", "Name": "2024/a.png", "Version": "3"},
    "photos/2024/a.png",
])
def test_request_s3_refuses_escapes_and_bad_locations(buckets, s3):
    raises(errors.InvalidParameterException, image_bytes_from_request,
           {"S3Object": s3}, bucket_dir=str(buckets))


@pytest.mark.parametrize("name", ["2024/missing.png", "2024", "nobucket-file.png"])
def test_request_s3_missing_object(buckets, name):
    error = raises(errors.InvalidS3ObjectException, image_bytes_from_request,
                   {"S3Object": {"Bucket": "photos", "Name": name}}, bucket_dir=str(buckets))
    assert str(buckets) not in str(error)  # the server's directories are not shown
    raises(errors.InvalidS3ObjectException, image_bytes_from_request,
           {"S3Object": {"Bucket": "nobucket", "Name": "a.png"}}, bucket_dir=str(buckets))


def test_large_legitimate_photo_is_accepted():
    # 4000x3000 (12 MP, a typical phone photo): far above Rekognition's recommended
    # 1920x1080, but under 5 MB and MAX_IMAGE_PIXELS, so it must load -- as a working
    # copy shrunk to WORKING_MAX_SIDE, the ramp still where it was.
    ramp = np.linspace(0, 255, 4000, dtype=np.uint8)
    data = encode(Image.fromarray(np.broadcast_to(ramp[None, :, None], (3000, 4000, 3)).copy()),
                  "JPEG")
    assert len(data) <= MAX_IMAGE_BYTES
    image = load_image(data)
    assert (image.original_width, image.original_height) == (4000, 3000)
    assert (image.width, image.height) == (WORKING_MAX_SIDE, WORKING_MAX_SIDE * 3 // 4)
    assert image.pixels.shape == (image.height, image.width, 3)
    for x in (0.1, 0.5, 0.9):  # same relative place, same value
        assert abs(int(image.pixels[100, int(x * image.width), 0]) - int(ramp[int(x * 4000)])) <= 3


# --- decoded size, working copy, truncated streams (issue 8) ------------------------------


def _no_decode(monkeypatch) -> list:
    loads: list = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: loads.append(self) or real_load(self))
    return loads


@pytest.mark.parametrize("make, limit", [
    (bombs.webp_bomb, "158,760,000 bytes"),  # 6300x6300 RGBA: 4 bytes a pixel
    (bombs.png16_bomb, "317,520,000 bytes"),  # 16-bit RGBA: 8 bytes a pixel
    (lambda: bombs.png(5000, 5000, 16, 2, bombs.zero_stream(6 * 5000, 5000)), "150,000,000"),
], ids=["webp-34-bytes", "png-16bit-rgba", "png-16bit-rgb"])
def test_decoded_bytes_limit_refuses_on_the_header(make, limit, monkeypatch):
    data = make()
    assert len(data) < 400_000
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
    assert w * h <= MAX_IMAGE_PIXELS  # the pixel cap alone lets these through
    loads = _no_decode(monkeypatch)
    start = time.perf_counter()
    error = raises(errors.ImageTooLargeException, load_image, data)
    assert time.perf_counter() - start < 0.5
    assert loads == []
    assert limit in str(error) and f"{MAX_DECODED_BYTES:,}" in str(error)


def test_webp_bomb_is_what_the_issue_sent():
    data = bombs.webp_bomb()
    assert len(data) <= 34
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.mode, img.size) == ("WEBP", "RGBA", (6300, 6300))


def test_8bit_rgb_at_the_pixel_cap_is_accepted_and_shrunk():
    # 6324 x 6324 = 39.99 MP of 8-bit RGB: 119,992,000 bytes, just under the limit.
    side = 6324
    data = bombs.png(side, side, 8, 2, bombs.zero_stream(3 * side, side))
    image = load_image(data)
    assert (image.original_width, image.original_height) == (side, side)
    assert (image.width, image.height) == (WORKING_MAX_SIDE, WORKING_MAX_SIDE)
    assert image.pixels.max() == 0


def test_16bit_grey_uses_two_bytes_a_pixel():
    # 16-bit grey is 2 bytes a pixel: 6000x6000 (72 MB) is within the limit.
    data = bombs.png(6000, 6000, 16, 0, bombs.zero_stream(2 * 6000, 6000))
    image = load_image(data)
    assert image.original_width == 6000 and image.width == WORKING_MAX_SIDE


def test_truncated_png_stream_is_refused_quickly(monkeypatch):
    data = bombs.truncated_png()
    assert len(data) < 200
    loads = _no_decode(monkeypatch)
    start = time.perf_counter()
    error = raises(errors.InvalidImageFormatException, load_image, data)
    assert time.perf_counter() - start < 0.5
    assert loads == [] and "PNG image is truncated" in str(error)


def test_png_stream_ending_one_row_early(astronaut):
    pixels = np.asarray(astronaut)
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    whole = bombs.png(512, 512, 8, 2, zlib.compress(rows))
    assert np.array_equal(load_image(whole).pixels, pixels)
    short = bombs.png(512, 512, 8, 2, zlib.compress(rows[:-(1 + 3 * 512)]))
    assert Image.open(io.BytesIO(short)).load() is not None  # Pillow alone accepts it
    raises(errors.InvalidImageFormatException, load_image, short)


@pytest.mark.parametrize("size", [(512, 512), (101, 87), (83, 200)])
def test_interlaced_png(size, astronaut):
    # Adam7 written here by slicing (independently of images.py's arithmetic): 7 passes,
    # each its own sub-image with a filter byte per row.
    pixels = np.asarray(astronaut.resize(size))
    stream = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                           (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            stream += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 2, 0, 0, 1)
    data = (b"\x89PNG\r\n\x1a\n" + bombs.png_chunk(b"IHDR", ihdr)
            + bombs.png_chunk(b"IDAT", zlib.compress(stream)) + bombs.png_chunk(b"IEND", b""))
    assert np.array_equal(load_image(data).pixels, pixels)
    cut = (b"\x89PNG\r\n\x1a\n" + bombs.png_chunk(b"IHDR", ihdr)
           + bombs.png_chunk(b"IDAT", zlib.compress(stream[:-10])) + bombs.png_chunk(b"IEND", b""))
    raises(errors.InvalidImageFormatException, load_image, cut)


def test_patched_jpeg_header_is_refused_quickly(jpeg, monkeypatch):
    data = bombs.patched_jpeg(jpeg)
    loads = _no_decode(monkeypatch)
    start = time.perf_counter()
    error = raises(errors.InvalidImageFormatException, load_image, data)
    assert time.perf_counter() - start < 0.5
    assert loads == [] and "JPEG image is truncated" in str(error)


@pytest.mark.parametrize("options", [
    {"quality": 95, "subsampling": 0}, {"quality": 20, "subsampling": 2},
    {"progressive": True}, {"quality": 1},
], ids=["444", "420-low", "progressive", "quality-1"])
def test_jpeg_scan_bound_keeps_real_jpegs(options, astronaut):
    # The bound (>= 1-2 bits per 8x8 block) holds for every valid JPEG, however compressible.
    for img in (astronaut, Image.new("RGB", (3000, 2000), "white"), Image.new("L", (4000, 100))):
        image = load_image(encode(img, "JPEG", **options))
        assert image.original_width == img.size[0]


@pytest.mark.parametrize("subsampling", [0, 2], ids=["444", "420"])
def test_progressive_40mp_jpeg_is_accepted(subsampling, astronaut):
    # Its coefficient buffer (2 bytes a sample: 240 MB at 4:4:4) is decoder scratch,
    # budgeted but not refused: a legitimate camera-sized photo must load.
    big = astronaut.resize((7300, 5475), Image.Resampling.BILINEAR)
    data = encode(big, "JPEG", quality=90, progressive=True, subsampling=subsampling)
    assert len(data) <= MAX_IMAGE_BYTES
    image = load_image(data)
    assert (image.original_width, image.width) == (7300, WORKING_MAX_SIDE)


def test_jpeg_decodes_shrunk_and_lands_where_the_original_is(astronaut):
    big = astronaut.resize((6000, 6000), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=85)
    assert len(data) <= MAX_IMAGE_BYTES
    image = load_image(data)
    assert (image.original_width, image.original_height) == (6000, 6000)
    assert (image.width, image.height) == (WORKING_MAX_SIDE, WORKING_MAX_SIDE)
    reference = np.asarray(astronaut.resize((WORKING_MAX_SIDE,) * 2, Image.Resampling.BICUBIC))
    assert np.abs(image.pixels.astype(int) - reference).mean() < 6


def test_large_rotated_image_reports_upright_sizes():
    img = Image.new("RGB", (5000, 2500), "blue")
    img.paste((255, 0, 0), (0, 0, 2500, 2500))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    image = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert (image.original_width, image.original_height) == (2500, 5000)
    assert (image.width, image.height) == (1024, 2048)
    top, bottom = image.pixels[500, 500], image.pixels[1500, 500]
    assert top[0] > 200 and bottom[2] > 200  # red on top, as test_exif_orientation_applied


def test_alpha_stays_white_after_shrinking():
    img = Image.new("RGBA", (4096, 4096), (0, 0, 0, 0))
    img.paste((10, 20, 30, 255), (0, 0, 2048, 4096))
    image = load_image(encode(img, "PNG"))
    assert image.width == WORKING_MAX_SIDE
    assert tuple(image.pixels[1000, 200]) == (10, 20, 30)
    assert tuple(image.pixels[1000, 1800]) == (255, 255, 255)


def test_decode_budget_bounds_concurrent_decodes():
    # Eight near-limit images in eight threads: the bytes reserved never pass the budget,
    # so at most two decode at once, and all eight still load.
    import threading
    side = 6000  # 108 MB of RGB each
    data = bombs.png(side, side, 8, 2, bombs.zero_stream(3 * side, side))
    budget = images_module._DECODE_BUDGET
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(budget.used)
            time.sleep(0.005)

    results: list = []
    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=lambda: results.append(load_image(data).width))
               for _ in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    watcher.join()
    assert results == [WORKING_MAX_SIDE] * 8
    assert max(seen) <= DECODE_BUDGET_BYTES
    assert max(seen) > MAX_DECODED_BYTES // 2  # it did watch decodes run
    assert budget.used == 0


def test_truncated_images_flag_is_never_set():
    import faceaudit
    root = os.path.dirname(faceaudit.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    assert "LOAD_TRUNCATED_IMAGES = " not in f.read(), name
