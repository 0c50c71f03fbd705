"""Image degradations of the field, each one small function on RGB uint8 (numpy + OpenCV).

They are what a camera and a link do to a picture: a colour cast (white balance), under- or
over-exposure (gain and gamma), haze (contrast pulled towards a veil), sensor noise, defocus blur
and JPEG re-compression. ``Degradation`` strings several of them together with fixed parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from shared import imaging
from shared.imaging import U8Image


def _clip(x: np.ndarray) -> U8Image:
    out: U8Image = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def colour_cast(img: U8Image, gains: tuple[float, float, float]) -> U8Image:
    return _clip(img.astype(np.float32) * np.asarray(gains, dtype=np.float32))


def exposure(img: U8Image, gain: float, gamma: float = 1.0, offset: float = 0.0) -> U8Image:
    """255 * gain * (x / 255) ** gamma + offset: gain < 1 darkens (dusk), > 1 burns out (glare)."""
    x = (img.astype(np.float32) / 255.0) ** gamma
    return _clip(255.0 * gain * x + offset)


def haze(img: U8Image, amount: float, veil: float = 200.0) -> U8Image:
    """Contrast pulled towards a bright veil (fog, a dirty lens): amount 0 = none, 1 = all veil."""
    return _clip(img.astype(np.float32) * (1 - amount) + veil * amount)


def noise(img: U8Image, sigma: float, rng: np.random.Generator) -> U8Image:
    return _clip(img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32))


def blur(img: U8Image, sigma: float) -> U8Image:
    if sigma <= 0:
        return img
    out: U8Image = imaging.opencv().GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=4)  # BORDER_REFLECT_101
    return out


def jpeg(img: U8Image, quality: int) -> U8Image:
    cv2 = imaging.opencv()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return imaging.decode(buf.tobytes())


@dataclass(frozen=True)
class Degradation:
    """One concrete degradation (the parameters drawn for one image), applied in camera order."""

    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gain: float = 1.0
    gamma: float = 1.0
    offset: float = 0.0
    haze: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg_quality: int | None = None

    def apply(self, img: U8Image, rng: np.random.Generator) -> U8Image:
        out = img
        if self.blur > 0:  # optics first, then the sensor, then the encoder
            out = blur(out, self.blur)
        if self.haze > 0:
            out = haze(out, self.haze)
        if (self.gain, self.gamma, self.offset) != (1.0, 1.0, 0.0):
            out = exposure(out, self.gain, self.gamma, self.offset)
        if self.cast != (1.0, 1.0, 1.0):
            out = colour_cast(out, self.cast)
        if self.noise > 0:
            out = noise(out, self.noise, rng)
        if self.jpeg_quality is not None:
            out = jpeg(out, self.jpeg_quality)
        return out

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
