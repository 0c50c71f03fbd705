"""Decompression bombs and decoder failures against ``shared.imaging.decode`` itself: the pixel cap is
enforced from the header, before OpenCV allocates anything, and OpenCV's own errors come out as
``EdgeloopError``s that say what was wrong (issue 22, item 1)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from shared import imaging
from shared.errors import EdgeloopError
from tests.helpers import REPO
from tests.security import images

pytestmark = pytest.mark.security

MB = 1024  # ru_maxrss is in KiB on Linux


def _spy(monkeypatch: pytest.MonkeyPatch, then: Callable[..., Any] | None = None) -> list[tuple[int, ...]]:
    """Replace cv2.imdecode; record every call (the encoded buffer's shape), then answer with ``then``."""
    calls: list[tuple[int, ...]] = []
    real = cv2.imdecode

    def spy(buf: np.ndarray, flags: int) -> Any:
        calls.append(buf.shape)
        return then(buf, flags) if then is not None else real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    return calls


def test_a_png_bomb_is_refused_from_its_header_without_decoding() -> None:
    bomb = images.png_bomb(30000, 30000)  # ~110 KB that decodes to 2.7 GB (5 GB peak, 17 s, before the fix)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(EdgeloopError, match=r"30000x30000") as e:
        imaging.decode(bomb)
    assert getattr(e.value, "kind", None) == "too_many_pixels"
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * MB


def test_a_40000_png_is_an_edgeloop_error_not_a_cv2_error() -> None:
    with pytest.raises(EdgeloopError, match=r"40000x40000") as e:
        imaging.decode(images.png_bomb(40000, 40000))
    assert getattr(e.value, "kind", None) == "too_many_pixels"


OVERSIZED = {
    "png": images.png_header(30000, 30000),
    "png-tall": images.png_header(1, 2**31 - 1),
    "jpeg": images.jpeg_header(65535, 65535),
    "jpeg-progressive": images.jpeg_header(30000, 30000, sof=0xC2),
    "jpeg-lossless-behind-20-app-segments": images.jpeg_header(30000, 30000, sof=0xC3, app_segments=20),
    "bmp": images.bmp_header(30000, 30000),
    "bmp-top-down": images.bmp_header(30000, -30000),
    "bmp-os2": images.bmp_header(65535, 65535, dib_size=12),
    "webp-vp8x": images.webp_vp8x_header(2**24, 2**24),
    "webp-vp8l": images.webp_vp8l_header(16384, 16384),
    "webp-vp8": images.webp_vp8_header(16383, 16383),
}


@pytest.mark.parametrize("name", sorted(OVERSIZED))
def test_oversized_headers_never_reach_the_decoder(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    calls = _spy(monkeypatch, then=lambda buf, flags: None)
    with pytest.raises(EdgeloopError, match=r"pixels") as e:
        imaging.decode(OVERSIZED[name])
    assert getattr(e.value, "kind", None) == "too_many_pixels"
    assert calls == []


@pytest.mark.parametrize("name", sorted(images.OTHER_FORMATS))
def test_formats_we_do_not_take_never_reach_the_decoder(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """OpenCV also decodes GIF, TIFF, PPM, Sun raster, HDR, JPEG 2000...: each its own parser and bomb."""
    calls = _spy(monkeypatch, then=lambda buf, flags: None)
    with pytest.raises(EdgeloopError, match=r"JPEG, PNG, BMP or WebP"):
        imaging.decode(images.OTHER_FORMATS[name])
    assert calls == []


def test_a_decoder_error_is_an_edgeloop_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(buf: np.ndarray, flags: int) -> Any:
        raise cv2.error("OpenCV(5.1.0) loadsave.cpp:80: error: (-215:Assertion failed)")

    _spy(monkeypatch, then=boom)
    with pytest.raises(EdgeloopError, match=r"could not decode") as e:
        imaging.decode(images.encoded(".png", 8, 8))
    assert getattr(e.value, "kind", None) == "not_image"


def test_images_up_to_the_cap_still_decode() -> None:
    assert imaging.decode(images.png_bomb(4096, 4096)).shape == (4096, 4096, 3)  # 16 Mpx: the default cap
    with pytest.raises(EdgeloopError, match=r"4097x4096"):
        imaging.decode(images.png_bomb(4097, 4096))


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        (".jpg", ()),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        (".png", ()),
        (".bmp", ()),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # lossless: VP8L
    ],
)
def test_every_format_we_take_still_decodes(fmt: str, params: tuple[int, ...]) -> None:
    assert imaging.decode(images.encoded(fmt, 37, 23, params)).shape == (23, 37, 3)


def test_opencv_itself_refuses_past_the_ceiling(tmp_path: Path) -> None:
    """The second line: a fresh process that loads OpenCV through ``imaging`` has its own limit at
    PIXEL_CEILING (64 Mpx) instead of 1 Gpx, for any decode that would bypass the header check."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(images.png_bomb(8193, 8192))
    code = (
        "import sys, numpy as np\n"
        "from shared import imaging\n"
        "cv2 = imaging.opencv()\n"
        "buf = np.fromfile(sys.argv[1], np.uint8)\n"
        "try:\n"
        "    cv2.imdecode(buf, cv2.IMREAD_COLOR)\n"
        "except cv2.error as e:\n"
        "    print('refused', 'CV_IO_MAX_IMAGE_PIXELS' in str(e))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.stdout.strip() == "refused True", out.stderr[-2000:]
