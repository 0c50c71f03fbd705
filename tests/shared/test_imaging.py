from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared import imaging
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def test_decode_returns_rgb_not_bgr() -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    out = imaging.decode(_png(red))
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [255, 0, 0]


def test_preprocess_matches_the_definition() -> None:
    prep = Preprocessing(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.2), size=32)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = imaging.preprocess(img, prep)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    expected = ((img / 255.0 - np.array(prep.mean)) / np.array(prep.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_resize_only_when_needed() -> None:
    prep = Preprocessing()
    big = np.full((64, 48, 3), 128, np.uint8)
    assert imaging.preprocess(big, prep).shape == (3, 32, 32)
    same = np.zeros((32, 32, 3), np.uint8)
    assert imaging.resize(same, 32) is same


def test_batch_is_nchw() -> None:
    imgs = np.zeros((5, 32, 32, 3), np.uint8)
    assert imaging.preprocess_batch(imgs, Preprocessing()).shape == (5, 3, 32, 32)
    assert imaging.preprocess_batch([], Preprocessing()).shape == (0, 3, 32, 32)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_undecodable_bytes_are_a_clear_error(data: bytes) -> None:
    with pytest.raises(EdgeloopError):
        imaging.decode(data)


def test_wrong_shapes_are_rejected() -> None:
    with pytest.raises(EdgeloopError):
        imaging.normalize(np.zeros((32, 32), np.uint8), Preprocessing())
    with pytest.raises(EdgeloopError):
        imaging.normalize(np.zeros((2, 32, 32, 4), np.uint8), Preprocessing())


def test_preprocessing_from_dict_validates() -> None:
    with pytest.raises(EdgeloopError):
        Preprocessing.from_dict({"mean": [0, 0], "std": [1, 1, 1]})
    with pytest.raises(EdgeloopError):
        Preprocessing.from_dict({"mean": [0, 0, 0], "std": [1, 0, 1]})
    p = Preprocessing()
    assert Preprocessing.from_dict(p.to_dict()) == p


def test_host_training_input_equals_shared_definition() -> None:
    torch = pytest.importorskip("torch")
    from host.factory.predict import to_input

    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    ref = imaging.preprocess_batch(imgs, Preprocessing())
    got = to_input(torch.from_numpy(imgs), Preprocessing()).contiguous().numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
