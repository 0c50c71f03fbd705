"""``shared.imageheader``: the size a header announces is the size OpenCV decodes, for every format we
take and every way the encoders write them; broken headers are an ``ImageError``, never a crash."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import imageheader, imaging
from shared.imageheader import ImageError, ImageTooLargeError, UnsupportedImageError
from tests.security import images

pytestmark = pytest.mark.security

CV_FORMATS = [
    (".jpg", ()),
    (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    (".png", ()),
    (".bmp", ()),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
]


@pytest.mark.parametrize(("fmt", "params"), CV_FORMATS)
@pytest.mark.parametrize(("width", "height"), [(1, 1), (37, 23), (640, 480), (2000, 3)])
def test_the_header_says_what_opencv_decodes(fmt: str, params: tuple[int, ...], width: int, height: int) -> None:
    data = images.encoded(fmt, width, height, params)
    found = imageheader.read(data)
    assert (found.width, found.height) == (width, height)
    assert imaging.decode(data).shape == (height, width, 3)
    assert found.suffix == (".jpg" if fmt == ".jpg" else fmt)


def test_pillow_written_files_agree_too() -> None:
    """JPEG with EXIF (and its thumbnail, a JPEG inside the JPEG) and WebP with alpha (VP8X)."""
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    rgba = image_module.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA")
    thumb = io.BytesIO()
    rgba.convert("RGB").resize((300, 200)).save(thumb, "JPEG")
    exif = image_module.Exif()
    exif[0x010F] = "edgeloop-test"
    cases = []
    for fmt, kwargs in (("JPEG", {"exif": exif.tobytes()}), ("WEBP", {"quality": 80}), ("WEBP", {"lossless": True})):
        buf = io.BytesIO()
        (rgba.convert("RGB") if fmt == "JPEG" else rgba).save(buf, fmt, **kwargs)
        cases.append(buf.getvalue())
    assert cases[1][12:16] == b"VP8X"
    for data in cases:
        found = imageheader.read(data)
        assert (found.width, found.height) == (70, 50)
        assert imaging.decode(data).shape == (50, 70, 3)


def test_a_cap_is_a_parameter() -> None:
    data = images.encoded(".png", 64, 64)
    with pytest.raises(ImageTooLargeError, match=r"64x64.*limited to 4,095 pixels"):
        imaging.decode(data, max_pixels=4095)
    assert imaging.decode(data, max_pixels=4096).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, r"IHDR"),
        (b"\xff\xd8\xff\xda\x00\x02", r"frame header"),  # scan data before any SOF
        (b"\xff\xd8\xff\xe0\x00\x01", r"frame header"),  # a segment length under 2
        (b"\xff\xd8\xff" + b"\xff" * 100 + b"\xc0", r"frame header"),  # endless fill bytes
        (b"\xff\xd8" + b"\xff\xe0\x00\x02" * 600 + images.jpeg_header(8, 8)[2:], r"frame header"),  # too many segments
        (images.jpeg_header(8, 0), r"8x0: no pixels"),  # height from a DNL marker: libjpeg cannot either
        (images.bmp_header(8, 8)[:20], r"ends inside"),
        (images.bmp_header(8, 8, dib_size=40)[:14] + b"\x10\x00\x00\x00" + bytes(20), r"16-byte info header"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8Z" + bytes(20), r"unknown chunk"),
    ],
)
def test_malformed_headers_are_image_errors(data: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        imaging.header(data)


def test_unsupported_formats_have_their_own_type() -> None:
    for data in images.OTHER_FORMATS.values():
        with pytest.raises(UnsupportedImageError):
            imageheader.read(data)


SEEDS = [images.encoded(fmt, 40, 30, params) for fmt, params in CV_FORMATS]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_mutated_headers_never_crash_and_never_disagree_with_opencv(
    seed: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    """Cut short, and bytes of the first 400 changed: an ImageError or a size OpenCV agrees with."""
    data = bytearray(seed[: max(cut, 1)] if cut < len(seed) else seed)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        found = imageheader.read(bytes(data))
    except ImageError:
        return
    if found.pixels > 4096 * 4096:
        return  # refused before decoding: what the cap is for
    try:
        img = imaging.decode(bytes(data))
    except ImageError:
        return
    assert img.shape[:2] == (found.height, found.width)
