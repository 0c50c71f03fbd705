"""Hostile images made in the test, never checked in: decompression bombs (valid files whose header
promises far more pixels than their bytes), and bare headers of every format the decoders know."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` black pixels, every row and byte present.

    Its rows are zeros, which zlib squeezes about 1000:1: 30000 x 30000 is about 110 KB on disk and
    2.7 GB once OpenCV has decoded it to 3 channels (the report's 875 KB file was the 8-bit version).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey, deflate, no filter, no interlace
    row = 1 + (width + 7) // 8  # filter byte + packed bits
    z = zlib.compressobj(9)
    block = bytes(row * 256)
    parts = [z.compress(block) for _ in range(height // 256)]
    parts += [z.compress(bytes(row * (height % 256))), z.flush()]
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_header(width: int, height: int) -> bytes:
    """Only a PNG's signature and IHDR (and an empty IEND): a header that lies about a body it lacks."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def jpeg_header(width: int, height: int, sof: int = 0xC0, app_segments: int = 1) -> bytes:
    """SOI, some APP segments (with a fake SOF inside one, which a parser must skip), a frame header
    (SOFn) of ``width`` x ``height``, then EOI."""
    app = b"\xff\xe1" + struct.pack(">H", 2 + 10) + b"Exif\xff\xc0\x00\x11\x08\x00"  # a decoy marker in data
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof_segment = bytes([0xFF, sof]) + struct.pack(">H", 2 + len(frame)) + frame
    return b"\xff\xd8" + app * app_segments + b"\xff\xff" + sof_segment + b"\xff\xd9"


def bmp_header(width: int, height: int, dib_size: int = 40) -> bytes:
    """A BITMAPINFOHEADER (or the 12-byte OS/2 core header) with no pixel data behind it."""
    if dib_size == 12:
        dib = struct.pack("<IHHHH", 12, width, height, 1, 24)
    else:
        dib = struct.pack("<IiiHHIIiiII", dib_size, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
        dib += bytes(dib_size - len(dib))
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def _riff(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8x_header(width: int, height: int) -> bytes:
    """An extended WebP (VP8X) whose canvas is ``width`` x ``height`` (up to 2**24 each)."""
    w, h = width - 1, height - 1
    return _riff(b"VP8X", b"\x00\x00\x00\x00" + w.to_bytes(3, "little") + h.to_bytes(3, "little"))


def webp_vp8l_header(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    return _riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + bytes(8))


def webp_vp8_header(width: int, height: int) -> bytes:
    return _riff(b"VP8 ", b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(8))


OTHER_FORMATS = {
    "gif": b"GIF89a\x10\x00\x10\x00\x00\x00\x00;",
    "tiff": b"II*\x00\x08\x00\x00\x00" + bytes(16),
    "ppm": b"P6\n30000 30000\n255\n" + bytes(16),
    "sun_raster": b"\x59\xa6\x6a\x95" + bytes(28),
    "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n",
    "jpeg2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(16),
}


def encoded(fmt: str, width: int, height: int, params: tuple[int, ...] = ()) -> bytes:
    """A real image of ``fmt`` ('.jpg', '.png', '.bmp', '.webp') from OpenCV's encoder."""
    import cv2

    rng = np.random.default_rng(width * 7919 + height)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(fmt, img, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {fmt}")
    return bytes(buf.tobytes())


def spy_imdecode(monkeypatch: pytest.MonkeyPatch, then: Callable[[np.ndarray, int], Any]) -> list[tuple[int, ...]]:
    """Record the shape of every buffer that reaches ``cv2.imdecode`` (then call ``then``): a refusal from the
    header must leave this list empty."""
    import cv2

    calls: list[tuple[int, ...]] = []

    def spy(buf: np.ndarray, flags: int) -> Any:
        calls.append(buf.shape)
        return then(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    return calls
