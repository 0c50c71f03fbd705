"""Decompression bombs and decoder failures sent as field samples to ``edgeloop serve`` (real HTTP,
embedded broker; issue 22, item 1): a JSON 413/400, nothing stored, the bomb never decoded, and the
health route answers while uploads are decoded."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from host.fleet.server import HostServer
from shared.protocol import ReleaseManifest
from tests.security import images

pytestmark = pytest.mark.security

AS_DEVICE = {"X-Edgeloop-Device": "dev-1", "X-Edgeloop-Fleet": "lab", "Content-Type": "application/octet-stream"}


def _upload(srv: HostServer, cid: str, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
    try:
        conn.request("POST", f"/api/v1/upload?command={cid}", body=body, headers=AS_DEVICE)
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read()
    finally:
        conn.close()


def _health_seconds(srv: HostServer) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
    try:
        conn.request("GET", "/api/v1/health")
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise AssertionError(f"/api/v1/health answered {r.status}")
        return time.perf_counter() - t0
    finally:
        conn.close()


def _request(srv: HostServer, n: int = 3) -> str:
    cid = str(uuid.uuid4())
    srv.samples.create("lab", "dev-1", cid, n_images=n)  # what POST .../samples does before it sends the command
    return cid


@pytest.mark.parametrize("side", [30000, 40000])
def test_a_png_bomb_upload_is_a_413_json_and_never_decoded(
    server: tuple[HostServer, ReleaseManifest], monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    srv, _ = server
    cid = _request(srv)
    calls = images.spy_imdecode(monkeypatch, then=lambda buf, flags: None)
    status, ctype, body = _upload(srv, cid, images.png_bomb(side, side))
    assert (status, ctype) == (413, "application/json"), body[:200]
    assert f"{side}x{side}" in json.loads(body)["detail"]
    assert calls == [] and srv.samples.files("lab", "dev-1", cid) == []


def test_a_40000_png_upload_is_json_even_when_it_reaches_opencv(server: tuple[HostServer, ReleaseManifest]) -> None:
    """Without a spy: before the fix, OpenCV's own 1 Gpx check raised cv2.error, a plain-text 500."""
    srv, _ = server
    status, ctype, body = _upload(srv, _request(srv), images.png_bomb(40000, 40000))
    assert ctype == "application/json" and status == 413, (status, body[:200])


def test_a_decoder_error_upload_is_a_400_json(
    server: tuple[HostServer, ReleaseManifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = server
    cid = _request(srv)

    def boom(buf: np.ndarray, flags: int) -> Any:
        raise cv2.error("OpenCV(5.1.0) grfmt_png.cpp: error: (-2:Unspecified error) broken")

    images.spy_imdecode(monkeypatch, then=boom)
    status, ctype, body = _upload(srv, cid, images.encoded(".png", 32, 32))
    assert (status, ctype) == (400, "application/json"), body[:200]
    assert "could not decode" in json.loads(body)["detail"]
    assert srv.samples.files("lab", "dev-1", cid) == []


def test_health_answers_while_uploads_are_decoded(
    server: tuple[HostServer, ReleaseManifest], monkeypatch: pytest.MonkeyPatch, golden_dir: Path
) -> None:
    """Bombs (the spy would sleep 3 s in a decode) and a good image whose decode takes 2 s block nobody."""
    srv, _ = server
    cid = _request(srv, n=1)
    real = cv2.imdecode

    def slow(buf: np.ndarray, flags: int) -> Any:
        time.sleep(3 if buf.size == len(images.png_bomb(30000, 30000)) else 2)
        return real(buf, flags) if buf.size < 100_000 else None

    images.spy_imdecode(monkeypatch, then=slow)
    img = next((golden_dir / "cat").iterdir()).read_bytes()
    results: list[int] = []
    bodies = [images.png_bomb(30000, 30000)] * 2 + [img]
    senders = [threading.Thread(target=lambda b=b: results.append(_upload(srv, cid, b)[0])) for b in bodies]
    for t in senders:
        t.start()
    time.sleep(0.2)
    worst, deadline = 0.0, time.monotonic() + 1.0
    while time.monotonic() < deadline:
        worst = max(worst, _health_seconds(srv))
        time.sleep(0.05)
    for t in senders:
        t.join(30)
    assert worst < 0.5, f"/api/v1/health took {worst:.2f} s while uploads were decoded"
    assert sorted(results) == [201, 413, 413]
