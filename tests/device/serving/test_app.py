"""The inference API over real HTTP on loopback (uvicorn), with the zoo model on ONNX Runtime."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from device.serving.config import InferenceConfig
from device.serving.server import InferenceServer


def _post(url: str, body: bytes, ctype: str | None = "image/jpeg") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": ctype} if ctype else {}
    req = urllib.request.Request(url + "/v1/classify", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def jpeg(golden_dir: Path) -> bytes:
    return next(golden_dir.rglob("*.jpg")).read_bytes()


def test_classify_answers_with_the_contract_fields(inference_server: InferenceServer, jpeg: bytes) -> None:
    status, body = _post(inference_server.url, jpeg)
    assert status == 200
    assert set(body) == {"label", "index", "confidence", "top", "latency_ms", "release"}
    assert body["release"] == "resnet20@1.0.0" and len(body["top"]) == 5
    assert body["top"][0][0] == body["label"] and 0 < body["confidence"] <= 1


@pytest.mark.parametrize(
    ("make", "ctype", "status", "kind"),
    [
        (lambda j: b"not an image at all", "image/jpeg", 400, "not_image"),
        (lambda j: j[: len(j) // 2], "image/jpeg", 400, "truncated"),
        (lambda j: b"", "image/png", 400, "not_image"),
        (lambda j: j, "text/plain", 415, "wrong_content_type"),
        (lambda j: j, None, 415, "wrong_content_type"),
        (lambda j: b"\xff\xd8" + b"x" * (65 * 1024), "image/jpeg", 413, "too_large"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_is_counted(
    inference_server: InferenceServer, jpeg: bytes, make: Any, ctype: str | None, status: int, kind: str
) -> None:
    got, body = _post(inference_server.url, make(jpeg), ctype)
    assert got == status and body["error"] == kind and body["message"]
    assert inference_server.telemetry.errors[kind] == 1
    assert _post(inference_server.url, jpeg)[0] == 200  # and the server goes on


def test_stats_and_health(inference_server: InferenceServer, jpeg: bytes) -> None:
    for _ in range(5):
        _post(inference_server.url, jpeg)
    _post(inference_server.url, b"junk")
    status, stats = _get(inference_server.url, "/v1/stats")
    assert status == 200
    assert stats["requests"] == 5 and stats["errors"] == 1
    assert set(stats["latency_ms"]) >= {"p50", "p90", "p99"} and stats["latency_ms"]["p50"] > 0
    assert stats["throughput_ips"] > 0 and stats["totals"]["requests"] == 5
    assert stats["drift"] == {"score": None, "threshold": 1.0, "drifted": False, "input_drift": None,
                              "label_drift": None, "n_images": 0, "details": None}  # fmt: skip
    assert _get(inference_server.url, "/healthz") == (200, {"ok": True, "state": "ready"})


def test_not_ready_before_the_warm_up() -> None:
    server = InferenceServer(InferenceConfig(listen="127.0.0.1:0"))
    server.start()
    try:
        assert _get(server.url, "/healthz")[0] == 503
    finally:
        server.stop()
