"""TensorRT on a real GPU (skipped where TensorRT or a CUDA device is missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.engine import bench
from device.engine.builder import EngineCache
from device.engine.runtimes.onnxruntime import OnnxRuntimeRuntime
from device.engine.runtimes.tensorrt import TensorRTConfig, TensorRTRuntime
from device.engine.runtimes.tensorrt.util import fast_by_compute_capability
from shared import datasets
from shared.modelmeta import read_meta
from tests.helpers import REPO

pytestmark = pytest.mark.gpu
ZOO = REPO / "host" / "zoo"


def _ort_logits(model: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    with OnnxRuntimeRuntime() as rt:
        rt.load(rt.build(model, "fp32", tmp))
        return rt.infer(x)


@pytest.mark.parametrize(
    ("file", "precision", "atol"),
    [
        ("resnet20.onnx", "fp32", 1e-2),
        ("resnet20-fp16.onnx", "fp16", 0.2),
        ("resnet20-int8-trt.onnx", "int8", 1.0),
        ("resnet20-slim-int8-trt.onnx", "int8", 1.0),
    ],
)
def test_build_and_match_onnxruntime(file: str, precision: str, atol: float, tmp_path: Path) -> None:
    model = ZOO / file
    if not model.exists():
        pytest.skip(f"{file} not in the zoo")
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
    cfg = TensorRTConfig(timing_cache=tmp_path / "timing.cache", max_batch=64)
    with TensorRTRuntime(cfg) as rt:
        rt.load(rt.build(model, precision, tmp_path / "e"))  # type: ignore[arg-type]
        got = rt.infer(x)
        t = rt.last_timing
        assert t is not None and t.compute_ms is not None and t.h2d_ms is not None and t.d2h_ms is not None
    ref = _ort_logits(model, x, tmp_path / "ort")
    assert np.abs(got - ref).max() < atol
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75
    assert (tmp_path / "timing.cache").stat().st_size > 0


def test_fp16_onnx_builds_strongly_typed(tmp_path: Path) -> None:
    model = ZOO / "resnet20-fp16.onnx"
    if not model.exists():
        pytest.skip("no FP16 ONNX in the zoo")
    with TensorRTRuntime() as rt:
        engine = rt.build(model, "fp16", tmp_path)
        assert engine.info["strongly_typed"] is True
        rt.load(engine)
        meta = read_meta(model)
        samples = datasets.list_samples(REPO / "shared" / "samples")
        ev = bench.evaluate(rt, samples, meta.classes, meta.preprocessing, batch=50)
        assert ev.top1 > 0.7


def test_engine_cache_hit_on_gpu(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    with TensorRTRuntime() as rt:
        _, hit1 = cache.get_or_build(rt, ZOO / "resnet20-fp16.onnx", "x" * 64, "fp16")
        _, hit2 = cache.get_or_build(rt, ZOO / "resnet20-fp16.onnx", "x" * 64, "fp16")
    assert (hit1, hit2) == (False, True)


def test_layer_profile_on_gpu(zoo_onnx: Path, tmp_path: Path) -> None:
    with TensorRTRuntime(TensorRTConfig(max_batch=32, opt_batches=(1, 32))) as rt:
        rt.load(rt.build(zoo_onnx, "fp32", tmp_path))
        layers = rt.profile_layers(batch=32, runs=3)
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
        assert rt.infer(x).shape == (4, 10)  # the serving context still works after profiling
    assert layers and all(layer.ms >= 0 for layer in layers) and sum(layer.ms for layer in layers) > 0


def test_profiles_timing_cache_and_memory_on_gpu(zoo_onnx: Path, tmp_path: Path) -> None:
    """Issue 16 on real hardware: every profile runs, the timing cache persists per version and GPU, the
    memory figure is the engine's own, FP32 is IEEE FP32, and the precisions match the capability table."""
    rt = TensorRTRuntime(TensorRTConfig(cache_dir=tmp_path / "rc", max_batch=128, opt_batches=(1, 64)))
    with rt:
        engine = rt.build(zoo_onnx, "fp32", tmp_path / "e")
        assert engine.info["tf32"] is False and len(engine.info["profiles"]) == 3
        rt.load(engine)
        ref_x = np.random.default_rng(0).standard_normal((128, 3, 32, 32), dtype=np.float32)
        full = rt.infer(ref_x)
        for n in (1, 10, 64, 100):
            np.testing.assert_allclose(rt.infer(ref_x[:n]), full[:n], atol=1e-3)
        path = rt.timing_cache_path()
        assert path is not None and path.is_file() and rt.version() in path.name
        mem = rt.gpu_memory_mb()
        assert mem is not None and 0 < mem < 1024  # a ResNet-20's engine, not the machine's memory in use
        int8, fp16 = fast_by_compute_capability(rt._cc)
        assert ("int8" in rt.supported_precisions()) is int8 and ("fp16" in rt.supported_precisions()) is fp16


@pytest.mark.parametrize(
    ("file", "precision", "atol"), [("resnet20-fp16.onnx", "fp16", 0.2), ("resnet20-int8-trt.onnx", "int8", 1.0)]
)
def test_dla_builds_runs_and_matches_onnxruntime(file: str, precision: str, atol: float, tmp_path: Path) -> None:
    """DLA core 0 with GPU fallback (Jetson AGX Orin, Orin NX, Xavier): its one-batch profiles serve
    every batch (padded), and the logits match ONNX Runtime's FP32."""
    with TensorRTRuntime() as gpu:
        if gpu.dla_cores() == 0:
            pytest.skip(f"{gpu.accelerator()} has no DLA cores")
    x = np.random.default_rng(0).standard_normal((64, 3, 32, 32), dtype=np.float32)
    with TensorRTRuntime(TensorRTConfig(dla_core=0, max_batch=64, opt_batches=(1, 64))) as rt:
        engine = rt.build(ZOO / file, precision, tmp_path / "e")  # type: ignore[arg-type]
        assert engine.info["dla_core"] == 0 and rt.accelerator().endswith("DLA core 0")
        rt.load(engine)
        full = rt.infer(x)
        np.testing.assert_allclose(rt.infer(x[:10]), full[:10], atol=1e-2)  # padded up to 64
    ref = _ort_logits(ZOO / file, x, tmp_path / "ort")
    assert np.abs(full - ref).max() < atol and (full.argmax(1) == ref.argmax(1)).mean() >= 0.75
