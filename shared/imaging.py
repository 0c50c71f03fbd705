"""The single definition of the model input, shared by host evaluation and device inference.

decode (OpenCV, BGR -> RGB) -> resize to the model's size when needed -> scale to [0, 1] ->
normalise with the model card's mean/std -> NCHW float32.

Decoding takes JPEG, PNG, BMP and WebP only, and refuses from the header (``shared.imageheader``)
any image over ``max_pixels`` before OpenCV allocates it: the cap is on pixels, not bytes, because a
tiny file can announce gigabytes of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared import imageheader
from shared.errors import EdgeloopError
from shared.imageheader import ImageError, ImageHeader, TruncatedImageError, UnsupportedImageError

# 16 Mpx (4096 x 4096): every camera frame up to 4K UHD (8.3 Mpx) and 12 Mpx phone photos pass, and
# a decode costs at most 48 MB (RGB) plus OpenCV's BGR copy. The model sees 32 x 32; nothing larger
# than this makes its input any better. A setting may raise it up to PIXEL_CEILING.
MAX_PIXELS = 4096 * 4096
# 64 Mpx (8192 x 8192, 192 MB decoded): the most any setting may allow, and OpenCV's own limit in
# this process (OPENCV_IO_MAX_IMAGE_PIXELS, when the environment does not set it) as a second line.
PIXEL_CEILING = 8192 * 8192

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image into the model's input; stored in every model card and release manifest."""

    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    size: int = 32

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocessing:
        mean = tuple(float(v) for v in data["mean"])  # type: ignore[attr-defined]
        std = tuple(float(v) for v in data["std"])  # type: ignore[attr-defined]
        if len(mean) != 3 or len(std) != 3:
            raise EdgeloopError("preprocessing mean/std must have 3 values (R, G, B)")
        if any(s <= 0 for s in std):
            raise EdgeloopError("preprocessing std values must be > 0")
        size = data.get("size", 32)
        if not isinstance(size, int | float | str):
            raise EdgeloopError("preprocessing size must be a number")
        return cls(mean=mean, std=std, size=int(size))


def opencv() -> Any:
    """OpenCV, set up for our use (threads: one; we parallelise across images ourselves)."""
    # Imported lazily so that `import shared` stays cheap for tools that never touch pixels.
    if "cv2" not in sys.modules:  # OpenCV reads its limit once, when it loads
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(PIXEL_CEILING))
    import cv2

    cv2.setNumThreads(1)  # we parallelise across images ourselves; nested pools only thrash
    return cv2


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def truncation(data: bytes | bytearray | memoryview) -> str | None:
    """Why a JPEG or PNG is cut short, or None when its end marker is there (other formats: None).

    OpenCV decodes a truncated JPEG to a partly grey image with only a warning on stderr, so a
    server that must refuse broken uploads checks the end marker itself: JPEG's EOI (FF D9, allowing
    for a little trailing padding) and PNG's IEND chunk.
    """
    head, tail = bytes(data[:8]), bytes(data[-64:])
    if head[:2] == b"\xff\xd8":
        return None if b"\xff\xd9" in tail else "the JPEG ends before its end-of-image marker (truncated)"
    if head == _PNG_SIGNATURE:
        return None if b"IEND" in tail[-16:] else "the PNG ends before its IEND chunk (truncated)"
    return None


def header(data: bytes | bytearray | memoryview, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """Format and size from the header; ``ImageError`` unless it is a JPEG/PNG/BMP/WebP within the cap."""
    if len(data) == 0:
        raise UnsupportedImageError("cannot decode an empty image")
    found = imageheader.read(data)
    imageheader.check_pixels(found, max_pixels)
    return found


def decode(data: bytes | bytearray | memoryview, strict: bool = False, max_pixels: int = MAX_PIXELS) -> U8Image:
    """Decode encoded image bytes (JPEG/PNG/BMP/WebP) to an HxWx3 RGB uint8 array.

    Refused with an ``ImageError`` (an ``EdgeloopError``) whose ``kind`` says why: another format, a
    malformed header, more than ``max_pixels`` pixels (``ImageTooLargeError``, before any decoding),
    or bytes OpenCV cannot decode. ``strict`` also refuses a JPEG or PNG that is cut short (see
    ``truncation``).
    """
    found = header(data, max_pixels)
    if strict and (why := truncation(data)) is not None:
        raise TruncatedImageError(why)
    cv2 = opencv()
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag)
    except cv2.error as e:  # OpenCV's own checks (its pixel limit, a broken stream) raise instead of returning None
        reason = str(e).strip().splitlines()[-1][:200]
        raise ImageError(f"OpenCV could not decode the {found.format.upper()}: {reason}") from e
    if img is None:
        raise ImageError(f"OpenCV could not decode the {found.format.upper()} (corrupt data)")
    if rgb_flag is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    out: U8Image = img
    return out


def load(path: str | Path) -> U8Image:
    """Read and decode one image file to RGB uint8."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise EdgeloopError(f"cannot read image {path}: {e.strerror}") from e
    try:
        return decode(data)
    except EdgeloopError as e:
        raise EdgeloopError(f"{path}: {e}") from e


def resize(rgb: U8Image, size: int) -> U8Image:
    """Resize to size x size when needed (INTER_AREA shrinks without aliasing)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    cv2 = opencv()
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
    out: U8Image = cv2.resize(rgb, (size, size), interpolation=interp)
    return out


def affine(prep: Preprocessing) -> tuple[F32Array, F32Array]:
    """Per-channel (scale, shift) with ``x_norm = x_uint8 * scale - shift``.

    One fused multiply-add instead of /255, -mean, /std. Every implementation of the input
    (NumPy here, torch on the host's training path) uses these same constants.
    """
    std = np.asarray(prep.std, dtype=np.float32)
    mean = np.asarray(prep.mean, dtype=np.float32)
    scale = (np.float32(1.0) / (np.float32(255.0) * std)).astype(np.float32)
    shift = (mean / std).astype(np.float32)
    return scale, shift


def normalize(batch_hwc: U8Image, prep: Preprocessing) -> F32Array:
    """uint8 NHWC (or HWC) RGB -> normalised float32 NCHW (or CHW)."""
    if batch_hwc.ndim not in (3, 4) or batch_hwc.shape[-1] != 3:
        raise EdgeloopError(f"expected HxWx3 or NxHxWx3 RGB uint8, got shape {batch_hwc.shape}")
    scale, shift = affine(prep)
    if batch_hwc.ndim == 3:
        return normalize(batch_hwc[None], prep)[0]
    n, h, w, _ = batch_hwc.shape
    # Same arithmetic as ``x * scale - shift`` on float32 (bit-identical), done as two passes into one
    # preallocated NCHW array: the uint8 -> float32 cast and the layout change ride on the multiply.
    # About 5x faster than astype + broadcast + transpose + copy, which matters on the device's
    # evaluation path, where decode shares the CPU with inference.
    x = np.empty((n, 3, h, w), dtype=np.float32)
    np.multiply(batch_hwc.transpose(0, 3, 1, 2), scale[None, :, None, None], out=x, casting="unsafe")
    np.subtract(x, shift[None, :, None, None], out=x)
    return x


def preprocess(rgb: U8Image, prep: Preprocessing) -> F32Array:
    """One decoded RGB image -> the model's CHW float32 input."""
    return normalize(resize(rgb, prep.size), prep)


def preprocess_batch(images: Sequence[U8Image] | U8Image, prep: Preprocessing) -> F32Array:
    """Several decoded RGB images -> NCHW float32."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1] != prep.size or images.shape[2] != prep.size:
            images = np.stack([resize(im, prep.size) for im in images])
        return normalize(images, prep)
    if len(images) == 0:
        return np.zeros((0, 3, prep.size, prep.size), dtype=np.float32)
    return normalize(np.stack([resize(im, prep.size) for im in images]), prep)
