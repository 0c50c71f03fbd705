"""Decompression bombs and decoder failures against the device's inference API, over real HTTP
(uvicorn on loopback), with the zoo model on ONNX Runtime (issue 22, item 1).

Every refusal is a JSON 4xx that names its kind, the bomb never reaches OpenCV's decoder, and
``/healthz`` keeps answering while images are decoded: decoding runs off the event loop."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from device.serving.config import InferenceConfig
from device.serving.model import ServedModel
from device.serving.server import InferenceServer
from tests.security import images

pytestmark = pytest.mark.security


@pytest.fixture
def server(served_model: ServedModel) -> Iterator[InferenceServer]:
    """The inference API with a 1 MiB body limit: the bombs are well under it."""
    srv = InferenceServer(InferenceConfig(listen="127.0.0.1:0", max_body_kb=1024))
    srv.start()
    srv.serve(served_model)
    try:
        yield srv
    finally:
        srv.stop()


def _post(url: str, body: bytes, ctype: str = "image/png") -> tuple[int, str, bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    try:
        conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read()
    finally:
        conn.close()


def _get_seconds(url: str, path: str) -> tuple[int, float]:
    u = urlsplit(url)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - t0
    finally:
        conn.close()


@pytest.mark.parametrize("side", [30000, 40000])
def test_a_png_bomb_is_a_413_json_and_never_reaches_the_decoder(
    server: InferenceServer, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    calls = images.spy_imdecode(monkeypatch, then=lambda buf, flags: None)
    status, ctype, body = _post(server.url, images.png_bomb(side, side))
    assert (status, ctype) == (413, "application/json"), body[:200]
    answer = json.loads(body)
    assert answer["error"] == "too_many_pixels" and f"{side}x{side}" in answer["message"]
    assert calls == []
    assert server.telemetry.errors["too_many_pixels"] == 1


def test_a_40000_png_is_json_even_when_it_reaches_opencv(server: InferenceServer) -> None:
    """Without a spy: before the fix, OpenCV's own 1 Gpx check raised cv2.error, a plain-text 500."""
    status, ctype, body = _post(server.url, images.png_bomb(40000, 40000))
    assert ctype == "application/json" and status == 413, (status, body[:200])


def test_a_decoder_error_is_a_400_json(server: InferenceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(buf: np.ndarray, flags: int) -> Any:
        raise cv2.error("OpenCV(5.1.0) grfmt_png.cpp: error: (-2:Unspecified error) broken")

    images.spy_imdecode(monkeypatch, then=boom)
    status, ctype, body = _post(server.url, images.encoded(".png", 32, 32))
    assert (status, ctype) == (400, "application/json"), body[:200]
    assert json.loads(body)["error"] == "not_image"


@pytest.mark.parametrize("name", ["gif", "tiff", "ppm"])
def test_formats_opencv_knows_but_we_do_not_take_are_a_400_json(server: InferenceServer, name: str) -> None:
    status, ctype, body = _post(server.url, images.OTHER_FORMATS[name], "image/" + name)
    assert (status, ctype) == (400, "application/json") and json.loads(body)["error"] == "not_image"


def _max_health_latency(url: str, seconds: float) -> float:
    worst, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, took = _get_seconds(url, "/healthz")
        assert status == 200
        worst = max(worst, took)
        time.sleep(0.05)
    return worst


def test_healthz_answers_while_bombs_are_refused(server: InferenceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four clients send bombs; a decode that reached OpenCV would take its seconds (the spy sleeps 3 s)."""

    def slow(buf: np.ndarray, flags: int) -> Any:
        time.sleep(3)
        return None

    calls = images.spy_imdecode(monkeypatch, then=slow)
    results: list[int] = []
    senders = [
        threading.Thread(target=lambda: results.append(_post(server.url, images.png_bomb(30000, 30000))[0]))
        for _ in range(4)
    ]
    for t in senders:
        t.start()
    worst = _max_health_latency(server.url, 1.5)
    for t in senders:
        t.join(30)
    assert worst < 0.5, f"/healthz took {worst:.2f} s while bombs were refused"
    assert results == [413] * 4 and calls == []


def test_decoding_runs_off_the_event_loop(
    server: InferenceServer, monkeypatch: pytest.MonkeyPatch, golden_dir: Path
) -> None:
    """A good image whose decode takes 2 s (the spy sleeps, then decodes) blocks nobody else."""
    real = cv2.imdecode

    def slow(buf: np.ndarray, flags: int) -> Any:
        time.sleep(2)
        return real(buf, flags)

    images.spy_imdecode(monkeypatch, then=slow)
    jpeg = next(golden_dir.rglob("*.jpg")).read_bytes()
    results: list[int] = []
    sender = threading.Thread(target=lambda: results.append(_post(server.url, jpeg, "image/jpeg")[0]))
    sender.start()
    time.sleep(0.2)
    worst = _max_health_latency(server.url, 1.0)
    sender.join(30)
    assert worst < 0.5, f"/healthz took {worst:.2f} s while an image was decoded"
    assert results == [200]
