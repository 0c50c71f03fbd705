from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device import bench
from device.runtimes.base import Runtime
from device.runtimes.onnxruntime import OnnxRuntimeRuntime
from shared import datasets, imaging
from shared.modelmeta import read_meta


@pytest.fixture
def fp32_runtime(zoo_onnx: Path, tmp_path: Path) -> Iterator[Runtime]:
    """The zoo baseline built and loaded on ONNX Runtime (FP32)."""
    with OnnxRuntimeRuntime() as rt:
        rt.load(rt.build(zoo_onnx, "fp32", tmp_path))
        yield rt


def test_latency_stats() -> None:
    s = bench.latency_stats([1.0] * 98 + [10.0, 20.0])
    assert s["p50"] == 1.0 and s["max"] == 20.0 and s["p99"] > s["p90"]
    with pytest.raises(ValueError):
        bench.latency_stats([])


def test_evaluate_agrees_with_plain_inference(zoo_onnx: Path, golden_dir: Path, fp32_runtime: Runtime) -> None:
    meta, rt = read_meta(zoo_onnx), fp32_runtime
    ev = bench.evaluate(rt, datasets.list_samples(golden_dir), meta.classes, meta.preprocessing, batch=32, workers=2)
    data = datasets.load_labelled(golden_dir, classes=meta.classes)
    logits = rt.infer(imaging.preprocess_batch(data.images, meta.preprocessing))
    lat = bench.measure_latency(rt, batch=1, warmup=2, iterations=10)
    thr = bench.measure_throughput(rt, batch=16, min_seconds=0.1)
    assert ev.n_images == 200
    assert ev.top1 == pytest.approx(float((logits.argmax(1) == data.labels).mean()))
    np.testing.assert_array_equal(ev.predictions, logits.argmax(1))
    assert set(ev.per_class) == set(meta.classes)
    assert ev.throughput_ips > 0 and ev.decode_s > 0 and ev.infer_s > 0
    assert lat.iterations == 10 and lat.latency_ms["p50"] > 0 and lat.breakdown_ms is None
    assert thr.ips > 0


def test_bench_cli_json_contract(zoo_onnx: Path, golden_dir: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.helpers import REPO, agent_env

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "bench",
            str(zoo_onnx),
            "--data",
            str(golden_dir),
            "--json",
            "--iterations",
            "20",
            "--warmup",
            "2",
            "--throughput-batch",
            "32",
            "--rounds",
            "2",
            "--profile",
        ],
        cwd=REPO,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    r = json.loads(out.stdout)
    for key in (
        "runtime",
        "precision",
        "latency_ms",
        "raw_throughput_ips",
        "top1",
        "n_images",
        "end_to_end_throughput_ips",
    ):
        assert key in r, key
    assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert r["runtime"] == "onnxruntime" and r["precision"] == "fp32" and r["n_images"] == 200
    assert 0 <= r["top1"] <= 1
    # raw and end-to-end come from alternating rounds; the reported figures are their medians
    assert len(r["raw_throughput_rounds"]) == len(r["end_to_end_rounds"]) == r["rounds"] == 2
    assert min(r["raw_throughput_rounds"]) <= r["raw_throughput_ips"] <= max(r["raw_throughput_rounds"])
    assert r["end_to_end_vs_raw"] == pytest.approx(r["end_to_end_throughput_ips"] / r["raw_throughput_ips"])
    # --profile: per-layer times that add up to the reported total
    assert r["layers"] and r["layers_total_ms"] == pytest.approx(sum(x["ms"] for x in r["layers"]))
    assert r["profile_batch"] == 32 and all(x["output_shape"][0] == 32 for x in r["layers"] if x["output_shape"])


def test_raw_vs_end_to_end_alternates_rounds(zoo_onnx: Path, golden_dir: Path, fp32_runtime: Runtime) -> None:
    meta, rt = read_meta(zoo_onnx), fp32_runtime
    samples = datasets.list_samples(golden_dir)
    both = bench.raw_vs_end_to_end(rt, samples, meta.classes, meta.preprocessing, batch=50, rounds=3)
    with pytest.raises(ValueError):
        bench.raw_vs_end_to_end(rt, samples, meta.classes, meta.preprocessing, rounds=0)
    assert len(both.raw_ips) == len(both.end_to_end_ips) == 3
    assert both.evaluation.n_images == 200
    assert both.ratio == pytest.approx(both.end_to_end_median / both.raw_median)


def test_throughput_rounds_measures_every_round(fp32_runtime: Runtime) -> None:
    raw = bench.throughput_rounds(fp32_runtime, batch=16, rounds=3, min_seconds=0.05)
    assert len(raw) == 3 and all(v > 0 for v in raw)
    with pytest.raises(ValueError, match="rounds"):
        bench.throughput_rounds(fp32_runtime, rounds=0)
