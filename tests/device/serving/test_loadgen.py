from __future__ import annotations

from pathlib import Path

import pytest

from device.engine import bench
from device.engine.loadgen import loadgen
from device.serving.model import ServedModel
from device.serving.server import InferenceServer
from shared import datasets
from shared.errors import EdgeloopError


def test_top1_over_http_equals_the_runtime_evaluation(
    inference_server: InferenceServer, served_model: ServedModel, golden_dir: Path
) -> None:
    r = loadgen(inference_server.url, golden_dir, concurrency=8)
    direct = bench.evaluate(
        served_model.runtime, datasets.list_samples(golden_dir), served_model.classes, served_model.prep
    )
    assert r["requests"] == direct.n_images and r["errors"] == 0
    assert r["top1"] == pytest.approx(direct.top1)
    assert r["throughput_rps"] > 0 and r["latency_ms"]["p99"] >= r["latency_ms"]["p50"] > 0
    assert r["releases"] == {"resnet20@1.0.0": direct.n_images}


def test_requests_and_duration(inference_server: InferenceServer, golden_dir: Path) -> None:
    assert loadgen(inference_server.url, golden_dir, concurrency=4, requests=30)["requests"] == 30
    timed = loadgen(inference_server.url, golden_dir, concurrency=4, duration=0.5)
    assert timed["requests"] > 0 and timed["duration_s"] < 5


def test_bad_arguments(tmp_path: Path, golden_dir: Path) -> None:
    with pytest.raises(EdgeloopError, match="not both"):
        loadgen("http://127.0.0.1:9", golden_dir, duration=1, requests=1)
    with pytest.raises(EdgeloopError, match="no images"):
        loadgen("http://127.0.0.1:9", tmp_path)
    with pytest.raises(EdgeloopError, match="concurrency"):
        loadgen("http://127.0.0.1:9", golden_dir, concurrency=0)


def test_an_unreachable_server_is_counted_not_raised(golden_dir: Path) -> None:
    r = loadgen("http://127.0.0.1:9", golden_dir, concurrency=2, requests=3, timeout=2)
    assert r["errors"] == 3 and r["throughput_rps"] == 0
