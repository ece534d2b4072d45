"""Image helpers for tests: encode pixels as the bytes a client would send."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, format: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format, **options)
    return buffer.getvalue()
