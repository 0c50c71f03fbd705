from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device.commands.deploy import run_benchmark
from device.engine import bench
from device.engine.runtimes.base import Runtime
from device.engine.runtimes.onnxruntime import OnnxRuntimeRuntime
from shared import datasets, imaging
from shared import protocol as p
from shared.modelmeta import read_meta
from tests.device.engine.jetson.fakes import install_tegrastats, no_jtop
from tests.device.engine.jetson.test_tegrastats import TX2_JP4
from tests.device.fakes import FakeRuntime
from tests.helpers import REPO

ZOO_ONNX = REPO / "host" / "zoo" / "resnet20.onnx"


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


def test_an_unreadable_image_is_skipped_and_counted_not_fatal(
    fp32_runtime: Runtime, golden_dir: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "set"
    for f in sorted(golden_dir.rglob("*.jpg"))[:30]:
        (data / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / f.parent.name / f.name)
    broken = next((data).rglob("*.jpg"))
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    meta = read_meta(ZOO_ONNX)
    samples = datasets.list_samples(data)
    ev = bench.evaluate(fp32_runtime, samples, meta.classes, meta.preprocessing, batch=8)
    assert ev.unreadable == 1 and ev.n_images == len(samples) - 1
    assert ev.evaluated is not None and len(ev.evaluated) == ev.n_images
    assert samples.index(next(s for s in samples if s.source == str(broken))) not in set(ev.evaluated.tolist())


def test_a_deadline_stops_the_work_early(fp32_runtime: Runtime, golden_dir: Path) -> None:
    import time

    meta = read_meta(ZOO_ONNX)
    samples = datasets.list_samples(golden_dir)
    ev = bench.evaluate(
        fp32_runtime, samples, meta.classes, meta.preprocessing, batch=10, prefetch=1, deadline=time.perf_counter()
    )
    assert 0 < ev.n_images < len(samples)
    lat = bench.measure_latency(fp32_runtime, iterations=10_000, deadline=time.perf_counter() + 0.2)
    assert 1 <= lat.iterations < 10_000


def _benchmark_on(rt: Runtime) -> p.BenchmarkReport:
    """``deploy.run_benchmark`` of ``rt`` as the agent's active engine (no eval set)."""
    slot = SimpleNamespace(ref=p.ReleaseRef(name="r20", version="1.0.0"), precision="fp32")
    agent = SimpleNamespace(
        device_id="d1",
        engines=SimpleNamespace(active=lambda: nullcontext((rt, None, slot))),
        config=SimpleNamespace(eval_dir=None, eval_limit=None),
    )
    settings = p.BenchSettings(warmup=1, iterations=5, throughput_batch=8, throughput_rounds=2, evaluate=False)
    return run_benchmark(agent, settings)


@pytest.fixture
def fake_rt(tmp_path: Path) -> Iterator[Runtime]:
    with FakeRuntime() as rt:
        rt.load(rt.build(ZOO_ONNX, "fp32", tmp_path))
        yield rt


def test_off_a_jetson_the_benchmark_has_no_power(
    fake_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats
    no_jtop(monkeypatch)
    raw = bench.raw_throughput(fake_rt, batch=8, rounds=2, min_seconds=0.05)
    assert raw.power is None and raw.power_figures() is None and raw.images > 0
    report = _benchmark_on(fake_rt)
    assert report.power is None
    assert p.decode_report(p.encode(report)) == report


def test_on_a_jetson_the_benchmark_samples_power_during_the_raw_rounds(
    fake_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_jtop(monkeypatch)
    install_tegrastats(tmp_path, monkeypatch, [TX2_JP4])  # VDD_IN 3056 mW, printed every 100 ms
    report = _benchmark_on(fake_rt)
    power = report.power
    assert power is not None and power.source == "tegrastats" and power.total_of == "VDD_IN"
    assert power.samples >= 3 and power.mean_mw == power.peak_mw == 3056.0
    assert power.seconds >= 0.9  # two rounds of at least 0.5 s
    assert power.energy_mj == pytest.approx(3056.0 * power.seconds)
    assert power.energy_mj_per_image is not None and 0 < power.energy_mj_per_image < power.energy_mj
    assert report.system is not None and "tegrastats" in report.system.sources
    assert p.decode_report(p.encode(report)) == report  # the JSON report round-trips
