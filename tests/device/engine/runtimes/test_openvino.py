"""The OpenVINO backend on the zoo's real files (where the openvino extra is installed), and what needs no OpenVINO:
the missing-package message, the registry's order, the profiler's arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from device.cli.bench import bench_command
from device.engine.builder import EngineCache, cache_key
from device.engine.runtimes import EngineError, RuntimeUnavailableError, registry
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from device.engine.runtimes.openvino import OpenVINOConfig, OpenVINORuntime, layer_times
from device.engine.runtimes.openvino import util as ov_util
from device.engine.runtimes.registry import runtime_config
from device.engine.runtimes.tensorrt import TensorRTRuntime
from shared import datasets, imaging
from shared.modelmeta import read_meta
from tests.helpers import REPO, agent_env, free_port, wait_healthy, wait_port

ZOO = REPO / "host" / "zoo"
F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def ov() -> ModuleType:
    return pytest.importorskip(
        "openvino", reason="the openvino extra is not installed: pip install 'edgeloop[openvino]'"
    )


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> tuple[F32, npt.NDArray[np.int64]]:
    """The 200 golden images as the models' input, and their labels."""
    meta = read_meta(ZOO / "resnet20.onnx")
    data = datasets.load_labelled(golden_dir, meta.classes, size=meta.preprocessing.size)
    return imaging.normalize(data.images, meta.preprocessing), data.labels


def _logits(rt: Any, onnx: Path, precision: Any, x: F32, out: Path) -> F32:
    rt.load(rt.build(onnx, precision, out))
    return np.concatenate([rt.infer(x[i : i + 64]) for i in range(0, len(x), 64)])


def test_fp32_matches_onnxruntime_on_the_golden_images(
    ov: ModuleType, golden: tuple[F32, npt.NDArray[np.int64]], tmp_path: Path
) -> None:
    x, labels = golden
    with OpenVINORuntime(OpenVINOConfig(threads=1)) as rt:
        got = _logits(rt, ZOO / "resnet20.onnx", "fp32", x, tmp_path / "ov")
        assert rt.engine.path.name == "model.onnx" and rt.engine.input_shape == (3, 32, 32)
        assert rt.engine.input_name == "input" and rt.last_timing is not None and rt.last_timing.total_ms > 0
        assert rt.engine.info["conv_int8"] == 0 and rt.engine.info["conv_float"] == 21
    with OnnxRuntimeRuntime(OnnxRuntimeConfig(threads=1)) as ort:
        ref = _logits(ort, ZOO / "resnet20.onnx", "fp32", x, tmp_path / "ort")
    assert got.shape == ref.shape == (len(x), 10) and got.dtype == np.float32
    assert (got.argmax(1) == ref.argmax(1)).mean() == 1.0  # top-1 agreement on all 200
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(1) == labels).mean() > 0.8


@pytest.mark.parametrize(
    ("int8", "fp32"),
    [("resnet20-int8.onnx", "resnet20.onnx"), ("resnet20-slim-int8-trt.onnx", "resnet20-slim.onnx")],
)
def test_int8_files_run_in_int8(
    ov: ModuleType, golden: tuple[F32, npt.NDArray[np.int64]], tmp_path: Path, int8: str, fp32: str
) -> None:
    """Both Q/DQ forms (U8S8 for CPUs, TensorRT's S8S8) load as they are and run INT8 convolutions."""
    x, labels = golden
    with OpenVINORuntime(OpenVINOConfig(threads=1)) as rt:
        quantized = _logits(rt, ZOO / int8, "int8", x, tmp_path / "int8")
        info = rt.engine.info
        reference = _logits(rt, ZOO / fp32, "fp32", x, tmp_path / "fp32")
    assert info["conv_int8"] == 21 and info["conv_float"] == 0
    assert all(k.endswith(("I8", "i8")) for k in info["conv_kernels"]), info["conv_kernels"]
    # 8-bit weights can saturate on AVX2 without VNNI (device/engine/calibration/forms.py): close, not identical
    assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.8  # measured 0.875 for the S8S8 file
    assert (quantized.argmax(1) == labels).mean() > 0.75


def test_the_engine_is_what_the_file_is(ov: ModuleType, tmp_path: Path) -> None:
    with OpenVINORuntime() as rt:
        with pytest.raises(EngineError, match="no Q/DQ nodes"):
            rt.build(ZOO / "resnet20.onnx", "int8", tmp_path / "a")
        with pytest.raises(EngineError, match="explicit Q/DQ"):
            rt.build(ZOO / "resnet20-int8.onnx", "fp32", tmp_path / "b")
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"\x00not onnx" * 100)
        with pytest.raises(EngineError, match="cannot read"):
            rt.build(bad, "fp32", tmp_path / "c")


@pytest.mark.parametrize("threads", [1, 2])
def test_the_thread_count_is_honoured(ov: ModuleType, tmp_path: Path, threads: int) -> None:
    config = runtime_config("openvino", threads)  # what `edgeloop-agent bench/serve --threads` make
    assert config == OpenVINOConfig(threads=threads)
    with registry.create(config) as rt:
        assert isinstance(rt, OpenVINORuntime)
        rt.load(rt.build(ZOO / "resnet20-slim-int8.onnx", "int8", tmp_path))
        assert rt.compiled_property("INFERENCE_NUM_THREADS") == threads
        assert rt.compiled_property("NUM_STREAMS") == 1  # one stream: each call uses every thread
        assert rt.build_options()["threads"] == threads


def test_the_compiled_model_cache_lives_in_the_engine_cache(ov: ModuleType, tmp_path: Path) -> None:
    """Built once, renamed into place by the engine cache, then every load imports the compiled blob."""
    cache = EngineCache(tmp_path / "engines")
    rt = OpenVINORuntime(OpenVINOConfig(threads=1))
    with rt:
        engine, hit = cache.get_or_build(rt, ZOO / "resnet20-int8.onnx", "c" * 64, "int8")
        again, hit2 = cache.get_or_build(rt, ZOO / "resnet20-int8.onnx", "c" * 64, "int8")
        assert (hit, hit2) == (False, True) and again.path == engine.path
        blobs = list((engine.path.parent / "ov-cache").glob("*.blob"))
        assert len(blobs) == 1 and engine.path.parent.parent == cache.root  # inside the engine's own entry
        rt.load(again)
        assert rt.loaded_from_cache is True and rt.compiled_property("LOADED_FROM_CACHE")
        cached_s = rt.load_s
        for blob in blobs:
            blob.unlink()
        rt.load(again)  # the blob is gone: compiled again, and the cache refilled
        assert rt.loaded_from_cache is False and len(list(blobs[0].parent.glob("*.blob"))) == 1
        print(f"load from the compiled-model cache {cached_s:.3f}s, compiling {rt.load_s:.3f}s")


def test_the_cache_key_carries_the_openvino_version_and_the_cpu(ov: ModuleType) -> None:
    with OpenVINORuntime() as rt:
        key = cache_key(rt, "d" * 64, "int8")
        cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
        assert key["runtime"] == "openvino" and key["runtime_version"] == ov.get_version()
        assert key["accelerator"].startswith(f"cpu:{cpu}") and not rt.uses_gpu()
        assert key["options"] == {"device": "CPU", "threads": 0, "streams": 1, "pinning": None, "bf16": False}


def test_supported_precisions_follow_the_plugin(ov: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenVINORuntime() as rt:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        assert rt.supported_precisions() == (
            *(["int8"] if "INT8" in caps else []),
            *(["fp16"] if "FP16" in caps else []),
            "fp32",
        )
        monkeypatch.setattr(rt, "_caps", ("FP32", "INT8", "EXPORT_IMPORT"))  # an AVX2 CPU: no fp16 arithmetic
        assert rt.supported_precisions() == ("int8", "fp32")
        monkeypatch.setattr(rt, "_caps", ("FP32", "FP16", "INT8"))  # e.g. the GPU plugin
        assert rt.supported_precisions() == ("int8", "fp16", "fp32")


def test_a_device_that_is_not_there_is_a_clear_error(ov: ModuleType) -> None:
    if "GPU" in ov.Core().available_devices:
        pytest.skip("an OpenVINO GPU is present here")
    with pytest.raises(RuntimeUnavailableError, match="no GPU device here"):
        OpenVINORuntime(OpenVINOConfig(device="GPU"))
    with pytest.raises(ValidationError):
        OpenVINOConfig(device="TPU")


def test_profile_layers_covers_every_conv(ov: ModuleType, tmp_path: Path) -> None:
    with OpenVINORuntime(OpenVINOConfig(threads=1)) as rt:
        with pytest.raises(EngineError):
            rt.profile_layers()  # nothing loaded yet
        rt.load(rt.build(ZOO / "resnet20-slim-int8.onnx", "int8", tmp_path))
        layers = rt.profile_layers(batch=8, runs=2)
    convs = [x for x in layers if x.op == "Convolution"]
    assert len(convs) == 21 and all(x.ms > 0 for x in convs)
    assert convs[0].output_shape is not None and convs[0].output_shape[0] == 8 and convs[0].output_shape[2:] == (32, 32)


def test_layer_times_drop_the_warm_up_call() -> None:
    def info(name: str, ms: float, status: str = "Status.EXECUTED") -> SimpleNamespace:
        return SimpleNamespace(node_name=name, node_type="Convolution", real_time=_Delta(ms), status=status)

    runs = [
        [info("a", 9.0), info("b", 0.5)],
        [info("a", 1.0), info("b", 0.3)],
        [info("a", 3.0), info("z", 0, "NOT_RUN")],
    ]
    got = layer_times(runs)
    assert [x.name for x in got] == ["a", "b"]  # NOT_RUN nodes (fused, constants) are not layers
    assert got[0].ms == pytest.approx(2.0) and got[1].ms == pytest.approx(0.3) and got[0].op == "Convolution"


class _Delta:
    def __init__(self, ms: float) -> None:
        self.ms = ms

    def total_seconds(self) -> float:
        return self.ms / 1e3


def test_accelerator_names_the_cpu_model_and_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ov_util.sysinfo, "isa_flags", lambda: ("avx2", "avx512_vnni"))
    assert (
        ov_util.accelerator("CPU", "Intel(R) Xeon(R) Gold 6338") == "cpu:Intel(R) Xeon(R) Gold 6338 (avx2+avx512_vnni)"
    )
    assert ov_util.accelerator("GPU.0", "Intel(R) Iris(R) Xe") == "gpu:Intel(R) Iris(R) Xe"
    assert len(ov_util.accelerator("CPU", "x" * 300)) == 128  # the wire's bound


def test_a_missing_openvino_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgeloop\[openvino\]'"):
        OpenVINORuntime()
    reason = OpenVINORuntime.probe()
    assert reason is not None and "the openvino backend needs the openvino package" in reason
    with pytest.raises(RuntimeUnavailableError, match="forced"):
        registry.create(OpenVINOConfig())
    if TensorRTRuntime.probe() is None:
        pytest.skip("a TensorRT GPU is present here: auto takes it")
    with registry.create(registry.AutoConfig()) as rt:  # auto falls back to ONNX Runtime
        assert rt.name == "onnxruntime"


def test_registered_between_tensorrt_and_onnxruntime() -> None:
    names = registry.names()
    assert names.index("tensorrt") < names.index("openvino") < names.index("onnxruntime")
    assert TensorRTRuntime.priority > OpenVINORuntime.priority > OnnxRuntimeRuntime.priority
    assert registry.parse_config({"type": "openvino", "threads": 2}) == OpenVINOConfig(threads=2)
    auto = registry.parse_config({"type": "auto", "openvino": {"allow_bf16": True}})
    assert isinstance(auto, registry.AutoConfig) and auto.backend("openvino") == OpenVINOConfig(allow_bf16=True)


def test_auto_takes_openvino_on_a_cpu(ov: ModuleType) -> None:
    if TensorRTRuntime.probe() is None:
        pytest.skip("a TensorRT GPU is present here: auto takes it")
    with registry.create(registry.AutoConfig()) as rt:
        assert rt.name == "openvino" and rt.accelerator().startswith("cpu:")


def test_bench_runs_on_openvino(ov: ModuleType, golden_dir: Path) -> None:
    r = bench_command(
        ZOO / "resnet20-slim-int8.onnx", None, 1, str(golden_dir), "openvino", 2, 10, 32, None, rounds=1, profile=True,
        threads=1,
    )  # fmt: skip
    assert r["runtime"] == "openvino" and r["precision"] == "int8" and r["accelerator"].startswith("cpu:")
    assert r["n_images"] == 200 and r["top1"] > 0.75 and r["raw_throughput_ips"] > 0
    assert r["layers"] and r["ms_by_op"]["Convolution"] > 0 and r["profile_batch"] == 32


def test_serve_runs_on_openvino(ov: ModuleType, golden_dir: Path) -> None:
    """`edgeloop-agent serve --runtime openvino` answers a real image."""
    port = free_port()
    argv = [sys.executable, "-m", "device.cli", "serve", str(ZOO / "resnet20-slim-int8.onnx"),
            "--runtime", "openvino", "--threads", "1", "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, env=agent_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=120)
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120)
        image = next((golden_dir / "bird").iterdir()).read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/classify", data=image, headers={"Content-Type": "image/jpeg"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["label"] in read_meta(ZOO / "resnet20-slim-int8.onnx").classes
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert b'"runtime": "openvino"' in out and b'"precision": "int8"' in out


def test_an_unknown_onnx_path_is_a_clear_error(ov: ModuleType, tmp_path: Path) -> None:
    with OpenVINORuntime() as rt, pytest.raises(EngineError, match="not found"):
        rt.build(tmp_path / "missing.onnx", "fp32", tmp_path)
