"""An image's format and size from its first bytes, before any pixel is decoded.

Why by hand: a decoder allocates the whole image its header announces (3 bytes a pixel once OpenCV
has made it BGR), so a 110 KB PNG that says 30000 x 30000 costs 2.7 GB and seconds of CPU. OpenCV's
Python API has no header-only call (``haveImageReader`` says only whether a format is known) and
its own check (``OPENCV_IO_MAX_IMAGE_PIXELS``, 1 Gpx by default) is read once per process. Pillow
reads headers lazily, but it is no dependency of the device, and the third-party ``imagesize`` is
no dependency at all. The four formats we take have fixed, small headers, so reading them here is a
few bounded lookups: at most ``_MAX_JPEG_SEGMENTS`` segment jumps for a JPEG, fixed offsets for the
others, never a loop over pixel data.

Only JPEG, PNG, BMP and WebP are taken (``datasets.IMAGE_SUFFIXES``, the inference API's content
types). OpenCV would also decode GIF, TIFF, JPEG 2000, PNM, PFM, Sun raster, HDR and AVIF: each one
more parser for an attacker to aim at, and none of them something a camera or our tools send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from shared.errors import EdgeloopError

FORMATS = "JPEG, PNG, BMP or WebP"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_JPEG_SEGMENTS = 512  # real files have under 20 before the frame header; each is a jump, not a scan
_MAX_FILL_BYTES = 64  # 0xFF padding allowed before a marker code (libjpeg takes any number; we need not)
# Start-of-frame markers (SOF0-SOF15) carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


class ImageError(EdgeloopError):
    """Bytes we will not decode; ``kind`` names why (a server's error code and counter)."""

    kind: ClassVar[str] = "not_image"


class UnsupportedImageError(ImageError):
    """Not one of the formats we take (or no image at all)."""


class TruncatedImageError(ImageError):
    kind: ClassVar[str] = "truncated"


class ImageTooLargeError(ImageError):
    """More pixels than the cap: refused from the header, before the decoder allocates them."""

    kind: ClassVar[str] = "too_many_pixels"


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg", "png", "bmp", "webp"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def suffix(self) -> str:
        return ".jpg" if self.format == "jpeg" else f".{self.format}"


def _u16be(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">H", data, at)[0])


def _png(data: bytes) -> tuple[int, int]:
    # The IHDR chunk must come first: length 13, then width and height as big-endian uint32.
    if len(data) < 24 or data[12:16] != b"IHDR" or struct.unpack_from(">I", data, 8)[0] != 13:
        raise ImageError("the PNG has no IHDR chunk where it must start")
    width, height = struct.unpack_from(">II", data, 16)
    return int(width), int(height)


def _jpeg(data: bytes) -> tuple[int, int]:
    """Walk the segments from SOI to the first start-of-frame marker, as libjpeg does."""
    pos = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        fill = 0
        while pos < len(data) and data[pos] == 0xFF and fill <= _MAX_FILL_BYTES:
            pos, fill = pos + 1, fill + 1
        if fill == 0 or fill > _MAX_FILL_BYTES or pos >= len(data):
            break
        marker, pos = data[pos], pos + 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in _JPEG_SOF and pos + 7 <= len(data):
            return _u16be(data, pos + 5), _u16be(data, pos + 3)  # length, precision, height, width
        if marker in (0x00, 0xD8, 0xD9, 0xDA) or pos + 2 > len(data) or _u16be(data, pos) < 2:
            break  # no frame header before the scan data or the end: nothing libjpeg could decode
        pos += _u16be(data, pos)
    raise ImageError("the JPEG has no readable frame header (SOF) before its image data")


def _bmp(data: bytes) -> tuple[int, int]:
    # After the 14-byte file header: the DIB header's size, then its width and height. OpenCV reads
    # 16-bit sizes from the 12-byte OS/2 core header and 32-bit signed ones from headers of 36+ bytes
    # (a negative height is a top-down bitmap); it refuses any other header size, and so do we.
    if len(data) < 26:
        raise ImageError("the BMP ends inside its header")
    dib = struct.unpack_from("<I", data, 14)[0]
    if dib == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib >= 36:
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise ImageError(f"the BMP has a {dib}-byte info header, which is no BMP version")
    return int(width), abs(int(height))


def _webp(data: bytes) -> tuple[int, int]:
    chunk, payload = data[12:16], data[20:32]
    if len(payload) < 10:
        raise ImageError("the WebP ends inside its header")
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        return int.from_bytes(payload[4:7], "little") + 1, int.from_bytes(payload[7:10], "little") + 1
    if chunk == b"VP8L" and payload[0] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int(struct.unpack_from("<I", payload, 1)[0])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and payload[3:6] == b"\x9d\x01\x2a":  # lossy key frame: 14 bits each (2 bits of scale)
        width, height = struct.unpack_from("<HH", payload, 6)
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    raise ImageError(f"the WebP starts with an unknown chunk {chunk!r}")


def format_of(data: bytes) -> str | None:
    """'jpeg', 'png', 'bmp' or 'webp' from the magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


_READERS = {"jpeg": _jpeg, "png": _png, "bmp": _bmp, "webp": _webp}


def read(data: bytes | bytearray | memoryview) -> ImageHeader:
    """The format and size an image's header announces; ``ImageError`` when it is none we take."""
    head = bytes(data[:32])
    fmt = format_of(head)
    if fmt is None:
        raise UnsupportedImageError(f"not a {FORMATS} image (it starts with {head[:8]!r})")
    # a JPEG's frame header may follow EXIF and other segments; the other formats' sizes are in 32 bytes
    body = head if fmt != "jpeg" else (data if isinstance(data, bytes) else bytes(data))
    width, height = _READERS[fmt](body)
    if width <= 0 or height <= 0:
        raise ImageError(f"the {fmt.upper()} header says {width}x{height}: no pixels")
    return ImageHeader(fmt, width, height)


def check_pixels(header: ImageHeader, max_pixels: int) -> None:
    if header.pixels > max_pixels:
        raise ImageTooLargeError(
            f"the {header.format.upper()} is {header.width}x{header.height} ({header.pixels / 1e6:,.1f} Mpx); "
            f"images are limited to {max_pixels:,} pixels ({max_pixels / 1e6:.1f} Mpx): send a smaller one"
        )
