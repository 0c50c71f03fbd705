"""The TensorRT backend without a GPU: the review points of issue 16, on fakes of TensorRT 10 and 11.

The fakes (``trt_fakes.py``) replace ``tensorrt`` and cuda-python at the import edge; the backend's own
code runs unchanged, on the zoo's real ONNX files.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.activation import EngineManager
from device.activation.steps import match_sparsity, precisions_to_try, with_cache_dirs
from device.activation.trials import plan
from device.cli.bench import bench_command
from device.config import load_config
from device.engine.builder import EngineCache
from device.engine.runtimes import registry
from device.engine.runtimes.base import EngineError, Precision
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from device.engine.runtimes.registry import runtime_config
from device.engine.runtimes.tensorrt import TensorRTConfig, TensorRTRuntime
from device.engine.runtimes.tensorrt.util import Buffers, engine_activation_bytes, fast_by_compute_capability
from device.state import AgentState
from shared.protocol import Artifact
from tests.device.engine.runtimes.trt_fakes import (
    FakeCudart,
    batch_of,
    fake_tensorrt,
    fixed_batch_onnx,
    install,
    plan_of,
)
from tests.device.fakes import FakeConfig, FakeRuntime
from tests.helpers import REPO
from tests.shared.factories import manifest

ZOO = REPO / "host" / "zoo"
FP32, FP16, INT8 = ZOO / "resnet20.onnx", ZOO / "resnet20-fp16.onnx", ZOO / "resnet20-int8-trt.onnx"
MiB = 2**20

Install = Callable[..., FakeCudart]


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Install:
    """Install a fake TensorRT (``major`` 10 or 11) and cuda-python on a GPU of compute capability ``cc``."""

    def install_fakes(
        major: int = 10,
        fast: tuple[bool, bool] = (True, True),
        cc: tuple[int, int] = (8, 7),
        fail: tuple[str, ...] = (),
    ) -> FakeCudart:
        cudart = FakeCudart(cc=cc, fail=set(fail))
        install(monkeypatch, fake_tensorrt(major, fast), cudart)
        return cudart

    return install_fakes


def _expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).mean(1, keepdims=True) * np.arange(1, 11, dtype=np.float32)


# -- 1. the timing cache persists in the state dir, one file per TensorRT version and GPU ----------------------


def test_the_agent_puts_runtime_caches_in_its_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auto = with_cache_dirs(registry.AutoConfig(), tmp_path / "rc")
    assert isinstance(auto, registry.AutoConfig)
    assert auto.backend("tensorrt") == TensorRTConfig(cache_dir=tmp_path / "rc" / "tensorrt")
    assert auto.backend("onnxruntime") == OnnxRuntimeConfig()  # no cache_dir field: untouched
    mine = TensorRTConfig(cache_dir=tmp_path / "mine")
    assert with_cache_dirs(mine, tmp_path / "rc") == mine  # an explicit one is kept
    seen: list[Any] = []
    monkeypatch.setattr(registry, "create", seen.append)
    cfg = load_config(None, device_id="dev", state_dir=str(tmp_path), require_signature=False)
    EngineManager(cfg, AgentState(cfg.state_dir), EngineCache(tmp_path / "engines")).new_runtime()
    assert seen[0].backend("tensorrt").cache_dir == tmp_path / "runtime-cache" / "tensorrt"


@pytest.mark.parametrize("major", [10, 11])
def test_the_timing_cache_is_keyed_by_version_and_gpu(fake_trt: Install, major: int, tmp_path: Path) -> None:
    fake_trt(major)
    rt = TensorRTRuntime(TensorRTConfig(cache_dir=tmp_path))
    with rt:
        path = rt.timing_cache_path()
        version = "10.13.3.9" if major == 10 else "11.4.0.106"
        assert path == tmp_path / f"timing-trt{version}-Orin-sm87.cache"
        engine = rt.build(FP16, "fp16", tmp_path / "e")
    assert path is not None and path.read_bytes().startswith(b"timing:fake-gpu:")
    assert engine.info["timing_cache_reused"] is False
    with TensorRTRuntime(TensorRTConfig(cache_dir=tmp_path)) as again:  # the next build starts from it
        assert again.build(FP16, "fp16", tmp_path / "e2").info["timing_cache_reused"] is True
    assert TensorRTRuntime(TensorRTConfig()).timing_cache_path() is None  # bench: no state dir, none kept


# -- 2. a stale or corrupt timing cache cannot fail a good build; neither can saving it ------------------------


@pytest.mark.parametrize("blob", [b"timing:other-gpu:abc", b"\x00garbage"], ids=["stale", "corrupt"])
def test_a_stale_timing_cache_is_replaced(
    fake_trt: Install, blob: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_trt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(blob)
    with TensorRTRuntime(TensorRTConfig(timing_cache=cache)) as rt, caplog.at_level(logging.WARNING):
        engine = rt.build(FP32, "fp32", tmp_path / "e")
    assert engine.path.is_file() and engine.info["timing_cache_reused"] is False
    assert "does not fit this TensorRT and GPU" in caplog.text
    assert cache.read_bytes().startswith(b"timing:fake-gpu:")  # overwritten with the fresh one


def test_failing_to_save_the_timing_cache_keeps_the_engine(
    fake_trt: Install, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_trt()
    (tmp_path / "a-file").write_text("")
    with TensorRTRuntime(TensorRTConfig(timing_cache=tmp_path / "a-file" / "timing.cache")) as rt:
        with caplog.at_level(logging.WARNING):
            engine = rt.build(FP32, "fp32", tmp_path / "e")
        rt.load(engine)
        assert rt.infer(batch_of(2)).shape == (2, 10)
    assert "could not save the timing cache" in caplog.text


# -- 3. the precisions follow the GPU, and the activation falls back --------------------------------------------


@pytest.mark.parametrize(
    ("major", "fast", "cc", "expected"),
    [
        (10, (False, True), (5, 3), ("fp16", "fp32")),  # Jetson Nano: TensorRT 10 asks the builder
        (10, (False, False), (8, 7), ("fp32",)),  # ... and believes it over the compute capability
        (10, (True, True), (8, 7), ("int8", "fp16", "fp32")),
        (11, (True, True), (5, 3), ("fp16", "fp32")),  # TensorRT 11 has no such query: compute capability
        (11, (True, True), (6, 1), ("int8", "fp32")),
        (11, (True, True), (8, 7), ("int8", "fp16", "fp32")),
    ],
)
def test_supported_precisions_follow_the_gpu(
    fake_trt: Install, major: int, fast: tuple[bool, bool], cc: tuple[int, int], expected: tuple[str, ...]
) -> None:
    fake_trt(major, fast, cc)
    with TensorRTRuntime() as rt:
        assert rt.supported_precisions() == expected


def test_compute_capability_table() -> None:
    assert fast_by_compute_capability((5, 3)) == (False, True)  # Nano
    assert fast_by_compute_capability((6, 2)) == (False, True)  # TX2
    assert fast_by_compute_capability((7, 2)) == (True, True)  # Xavier
    assert fast_by_compute_capability((8, 7)) == (True, True)  # Orin


class _NanoRuntime(FakeRuntime):
    precisions: tuple[Precision, ...] = ("fp16", "fp32")

    def supported_precisions(self) -> tuple[Precision, ...]:
        return self.precisions


def _artifact(precision: Precision, sparsity: str = "dense") -> Artifact:
    name = f"m-{precision}.onnx"
    return Artifact(name=name, url=name, sha256="a" * 64, size=1, precision=precision, sparsity=sparsity)


def test_the_activation_falls_back_to_what_the_gpu_runs(tmp_path: Path) -> None:
    rt = _NanoRuntime()
    assert precisions_to_try(rt, "int8") == ("fp16", "fp32")
    assert precisions_to_try(rt, "fp16") == ("fp16",)
    assert precisions_to_try(rt, None) == ("fp16", "fp32")
    rt.precisions = ("int8", "fp32")
    assert precisions_to_try(rt, "fp16") == ("fp32",)  # never to a more reduced precision than asked
    release = manifest(artifacts=(_artifact("int8"), _artifact("fp16"), _artifact("fp32")))
    assert [o.artifact.precision for o in plan(release, [_NanoRuntime()], "int8", False)] == ["fp16", "fp32"]
    assert [o.artifact.precision for o in plan(release, [_NanoRuntime()], None, False)] == ["fp16", "fp32"]


# -- 4. int8 only from Q/DQ files; the engine is labelled with what the file is --------------------------------


@pytest.mark.parametrize(
    ("major", "model", "precision", "refusal"),
    [
        (10, FP32, "int8", "has no Q/DQ nodes"),
        (11, FP32, "int8", "has no Q/DQ nodes"),
        (10, INT8, "fp16", "is quantized"),
        (10, INT8, "fp32", "is quantized"),
        (11, FP32, "fp16", "only strongly typed"),
        (11, FP16, "fp32", "only strongly typed"),
    ],
)
def test_a_build_that_would_be_mislabelled_is_refused(
    fake_trt: Install, major: int, model: Path, precision: Precision, refusal: str, tmp_path: Path
) -> None:
    fake_trt(major)
    with TensorRTRuntime() as rt, pytest.raises(EngineError, match=refusal):
        rt.build(model, precision, tmp_path)


@pytest.mark.parametrize(
    ("major", "model", "precision", "typed", "flags"),
    [
        (10, INT8, "int8", False, {"FP16", "INT8"}),
        (10, FP32, "fp16", False, {"FP16"}),
        (10, FP16, "fp16", True, set()),
        (10, FP32, "fp32", False, set()),
        (11, INT8, "int8", True, set()),
        (11, FP16, "fp16", True, set()),
        (11, FP32, "fp32", True, set()),
    ],
)
def test_precision_flags_per_version(
    fake_trt: Install, major: int, model: Path, precision: Precision, typed: bool, flags: set[str], tmp_path: Path
) -> None:
    fake_trt(major)
    with TensorRTRuntime() as rt:
        engine = rt.build(model, precision, tmp_path)
    plan = plan_of(engine.path)
    assert plan["strongly_typed"] is typed and engine.info["strongly_typed"] is typed
    assert set(plan["flags"]) & {"FP16", "INT8", "BF16", "FP8"} == flags
    assert engine.precision == precision


# -- 5. --sparse reaches auto; the manifest's sparsity decides; bench sizes the engine ---------------------------


def test_bench_flags_reach_every_backend_under_auto() -> None:
    auto = runtime_config("auto", sparse=True, batches=(1, 512))
    assert isinstance(auto, registry.AutoConfig)
    trt = auto.backend("tensorrt")
    assert isinstance(trt, TensorRTConfig) and trt.sparse_weights and trt.max_batch == 512
    assert trt.opt_batches == (1, 512)
    assert runtime_config("tensorrt", batches=(8, 8)) == TensorRTConfig(max_batch=8, opt_batches=(8,))


def test_the_manifest_sparsity_decides_sparse_kernels() -> None:
    class _Sparse(FakeRuntime):
        config: Any

    rt = _Sparse()
    rt.config = TensorRTConfig(sparse_weights=True)
    match_sparsity(rt, _artifact("fp16", "2:4"))
    assert rt.config.sparse_weights is True
    match_sparsity(rt, _artifact("fp16", "dense"))
    assert rt.config.sparse_weights is False  # a dense file has nothing for sparse kernels
    plain = FakeRuntime()
    match_sparsity(plain, _artifact("fp16", "2:4"))
    assert plain.config == FakeConfig()


@pytest.mark.parametrize(("cc", "sparse"), [((8, 7), True), ((7, 2), False)])
def test_sparse_weights_only_on_sparse_tensor_cores(
    fake_trt: Install, cc: tuple[int, int], sparse: bool, tmp_path: Path
) -> None:
    fake_trt(cc=cc)
    with TensorRTRuntime(TensorRTConfig(sparse_weights=True)) as rt:
        engine = rt.build(FP16, "fp16", tmp_path)
        assert rt.build_options()["sparse"] is sparse
    assert ("SPARSE_WEIGHTS" in plan_of(engine.path)["flags"]) is sparse


def test_bench_says_when_the_throughput_batch_is_cut(
    fake_runtime: type[FakeRuntime], zoo_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        r = bench_command(zoo_onnx, None, 1, None, "fake", 1, 3, 128, None, rounds=1)
    assert r["throughput_batch"] == 64 and r["throughput_batch_requested"] == 128
    assert "throughput is measured at 64, not at --throughput-batch 128" in caplog.text


# -- 6. the engine's own device memory, not the machine's -------------------------------------------------------


def test_gpu_memory_is_the_engines_own(fake_trt: Install, tmp_path: Path) -> None:
    fake_trt()  # FakeCudart has no cudaMemGetInfo: a machine-wide figure would fail here
    with TensorRTRuntime(TensorRTConfig(max_batch=64, opt_batches=(1, 64))) as rt:
        assert rt.gpu_memory_mb() is None
        engine = rt.build(FP32, "fp32", tmp_path)
        rt.load(engine)
        io = 64 * (3 * 32 * 32 + 10) * 4
        assert rt.gpu_memory_mb() == pytest.approx((3 * MiB + io + engine.path.stat().st_size) / MiB)


def test_engine_activation_memory_per_version() -> None:
    class Trt100:
        device_memory_size = 5

    class Trt11:
        device_memory_size_v2 = 7

    assert engine_activation_bytes(Trt100()) == 5
    assert engine_activation_bytes(Trt11()) == 7


# -- 7. one optimisation profile per served batch range ---------------------------------------------------------


def test_profile_ranges() -> None:
    assert TensorRTConfig().profile_batches() == [(1, 1, 1), (2, 64, 64), (65, 256, 256)]
    assert TensorRTConfig(max_batch=64).profile_batches() == [(1, 1, 1), (2, 64, 64)]
    assert TensorRTConfig(max_batch=32, opt_batches=(8, 64)).profile_batches() == [(1, 8, 8), (9, 32, 32)]
    assert TensorRTConfig.model_validate({"opt_batch": 16}).opt_batches == (16,)  # the old field still reads


@pytest.mark.parametrize("major", [10, 11])
def test_every_batch_runs_in_its_profile(fake_trt: Install, major: int, tmp_path: Path) -> None:
    fake_trt(major)
    rt = TensorRTRuntime()
    with rt:
        engine = rt.build(FP16, "fp16", tmp_path)
        assert [p[0][0] for p in plan_of(engine.path)["profiles"]] == [1, 2, 65]
        rt.load(engine)
        for n in (1, 10, 64, 100, 256, 3):
            x = batch_of(n)
            np.testing.assert_allclose(rt.infer(x), _expected(x), rtol=1e-5, atol=1e-6)
        assert rt._loaded is not None and rt._loaded.trt_engine._profile_runs == [1, 3, 2]
        with pytest.raises(EngineError, match=r"outside 1\.\.256"):
            rt.infer(batch_of(257))


# -- 8. smaller points -----------------------------------------------------------------------------------------


def test_buffers_free_everything_past_a_failure() -> None:
    cudart = FakeCudart(fail={"cudaEventDestroy"})
    buffers = Buffers(cudart, 64, 64)
    assert cudart.live_allocations == 4
    with pytest.raises(EngineError, match=r"cudaEventDestroy failed.*and 3 more"):
        buffers.free()
    assert cudart.live_allocations == 0  # freed although the events failed first
    assert any(name == "cudaStreamDestroy" for name, _ in cudart.calls)
    buffers.free()  # nothing left: a second free is a no-op


def test_the_device_is_made_current_on_every_thread(fake_trt: Install, tmp_path: Path) -> None:
    cudart = fake_trt()
    out: list[np.ndarray] = []
    with TensorRTRuntime(TensorRTConfig(max_batch=8, opt_batches=(8,))) as rt:
        rt.load(rt.build(FP32, "fp32", tmp_path))
        worker = threading.Thread(target=lambda: out.append(rt.infer(batch_of(4))))
        worker.start()
        worker.join()
        assert worker.ident in cudart.threads_that_set_the_device()
    np.testing.assert_allclose(out[0], _expected(batch_of(4)), rtol=1e-5, atol=1e-6)
    assert cudart.live_allocations == 0  # closing freed the buffers


def test_a_fixed_batch_engine_refuses_other_batches_clearly(fake_trt: Install, tmp_path: Path) -> None:
    fake_trt()
    with TensorRTRuntime() as rt:
        engine = rt.build(fixed_batch_onnx(tmp_path / "fixed.onnx", 8), "fp32", tmp_path / "e")
        assert engine.max_batch == 8
        rt.load(engine)
        with pytest.raises(EngineError, match="fixed batch of 8"):
            rt.infer(batch_of(1))
        assert rt.infer(batch_of(8)).shape == (8, 10)


@pytest.mark.parametrize(
    ("precision", "allow", "tf32"), [("fp32", False, False), ("fp32", True, True), ("fp16", False, True)]
)
def test_fp32_means_ieee_fp32_unless_tf32_is_allowed(
    fake_trt: Install, precision: Precision, allow: bool, tf32: bool, tmp_path: Path
) -> None:
    fake_trt()
    model = FP32 if precision == "fp32" else FP16
    with TensorRTRuntime(TensorRTConfig(allow_tf32=allow)) as rt:
        engine = rt.build(model, precision, tmp_path)
    assert ("TF32" in plan_of(engine.path)["flags"]) is tf32 and engine.info["tf32"] is tf32


def test_layer_profile_on_a_second_context(fake_trt: Install, tmp_path: Path) -> None:
    fake_trt(11)
    with TensorRTRuntime(TensorRTConfig(max_batch=32, opt_batches=(1, 32))) as rt:
        rt.load(rt.build(FP16, "fp16", tmp_path))
        layers = rt.profile_layers(batch=32, runs=3)
        assert rt.infer(batch_of(4)).shape == (4, 10)  # the serving context still works
    assert {layer.name for layer in layers} == {"conv1", "fc"} and all(layer.ms == 0.25 for layer in layers)
