"""DLA on the TensorRT backend without a Jetson (issue 21): the build, the run, the cache key and the selection,
on the fakes of TensorRT 10 and 11 (``trt_fakes.py``, whose DLA names the API conformance test checks in the real
10.3, 10.13 and 11.4 bindings).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from device.activation import EngineManager
from device.activation.steps import ArtifactOpener
from device.activation.trials import plan
from device.cli.bench import bench_command
from device.config import load_config
from device.engine.builder import EngineCache, cache_key
from device.engine.runtimes.base import EngineError, Precision, parse_target
from device.engine.runtimes.registry import AutoConfig, runtime_config
from device.engine.runtimes.tensorrt import TensorRTConfig, TensorRTRuntime
from device.state import AgentState
from shared.digest import sha256_file
from shared.errors import EdgeloopError
from shared.protocol import Artifact, ReleaseManifest
from tests.device.engine.runtimes.trt_fakes import FakeCudart, batch_of, fake_tensorrt, install, plan_of
from tests.helpers import REPO
from tests.shared.factories import manifest

ZOO = REPO / "host" / "zoo"
FP32, FP16, INT8 = ZOO / "resnet20.onnx", ZOO / "resnet20-fp16.onnx", ZOO / "resnet20-int8-trt.onnx"
FILES: dict[Precision, Path] = {"fp32": FP32, "fp16": FP16, "int8": INT8}

Board = Callable[..., FakeCudart]


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Board:
    """A fake TensorRT (``major`` 10 or 11) on an Orin GPU with ``dla_cores`` DLA cores."""

    def install_fakes(major: int = 10, dla_cores: int = 2) -> FakeCudart:
        cudart = FakeCudart()
        install(monkeypatch, fake_tensorrt(major, dla_cores=dla_cores), cudart)
        return cudart

    return install_fakes


# -- the build -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("major", "precision", "typed", "flags"),
    [
        (10, "fp16", False, {"FP16"}),  # TensorRT 10's DLA path: weak typing and its flags, also for the FP16 file
        (10, "int8", False, {"FP16", "INT8"}),
        (11, "fp16", True, set()),  # 11: the file's own types
        (11, "int8", True, set()),
    ],
)
def test_a_dla_build_sets_the_builder_fields(
    board: Board, major: int, precision: Precision, typed: bool, flags: set[str], tmp_path: Path
) -> None:
    board(major)
    with TensorRTRuntime(TensorRTConfig(dla_core=1)) as rt:
        engine = rt.build(FILES[precision], precision, tmp_path)
    built = plan_of(engine.path)
    assert built["device"] == "DLA" and built["dla_core"] == 1 and "GPU_FALLBACK" in built["flags"]
    assert built["strongly_typed"] is typed and set(built["flags"]) & {"FP16", "INT8", "BF16", "FP8"} == flags
    # DLA has no dynamic dimensions: one profile per batch the engine serves
    assert [p[0][0] for p in built["profiles"]] == [p[2][0] for p in built["profiles"]] == [1, 64, 256]
    assert engine.info["dla_core"] == 1 and engine.info["gpu_fallback"] is True


def test_without_gpu_fallback_the_flag_stays_off(board: Board, tmp_path: Path) -> None:
    board()
    with TensorRTRuntime(TensorRTConfig(dla_core=0, gpu_fallback=False)) as rt:
        built = plan_of(rt.build(FP16, "fp16", tmp_path).path)
    assert built["device"] == "DLA" and "GPU_FALLBACK" not in built["flags"]


@pytest.mark.parametrize(
    ("cores", "core", "says"), [(0, 0, "this device has no DLA"), (2, 2, "this device has DLA cores 0-1")]
)
def test_a_missing_dla_core_is_a_clear_error(board: Board, cores: int, core: int, says: str, tmp_path: Path) -> None:
    board(dla_cores=cores)
    with TensorRTRuntime(TensorRTConfig(dla_core=core)) as rt:
        assert rt.dla_cores() == cores
        with pytest.raises(EngineError, match=rf"DLA core {core} does not exist: {says}"):
            rt.build(FP16, "fp16", tmp_path)


@pytest.mark.parametrize("major", [10, 11])
def test_fp32_on_dla_is_refused(board: Board, major: int, tmp_path: Path) -> None:
    board(major)
    with TensorRTRuntime(TensorRTConfig(dla_core=0)) as rt:
        assert rt.supported_precisions() == ("int8", "fp16")
        with pytest.raises(EngineError, match="DLA runs FP16 and INT8 only, not fp32"):
            rt.build(FP32, "fp32", tmp_path)


def test_dla_batches_are_bounded() -> None:
    with pytest.raises(ValueError, match="DLA runs batches of at most 4096"):
        TensorRTConfig(dla_core=0, max_batch=8192)
    assert TensorRTConfig(max_batch=8192).max_batch == 8192  # the GPU has no such bound


# -- the run ---------------------------------------------------------------------------------------------------


def test_the_runtime_sets_its_dla_core_before_deserializing(board: Board, tmp_path: Path) -> None:
    board()
    with TensorRTRuntime(TensorRTConfig(dla_core=0)) as rt:
        engine = rt.build(FP16, "fp16", tmp_path)
    other = TensorRTRuntime(TensorRTConfig(dla_core=1))
    with other:  # the same plan, run on the other core
        other.load(engine)
        assert other._loaded is not None and other._loaded.trt_engine._runs_on_dla == 1
    restored = TensorRTRuntime()
    with restored:  # a runtime that does not name a core runs it on the core it was built for
        restored.load(engine)
        assert restored._loaded is not None and restored._loaded.trt_engine._runs_on_dla == 0


def test_a_batch_runs_padded_up_to_its_dla_profile(board: Board, tmp_path: Path) -> None:
    board()
    rt = TensorRTRuntime(TensorRTConfig(dla_core=0, max_batch=64, opt_batches=(1, 64)))
    with rt:
        rt.load(rt.build(FP16, "fp16", tmp_path))
        for n in (1, 10, 64):
            x = batch_of(n)
            expected = x.reshape(n, -1).mean(1, keepdims=True) * np.arange(1, 11, dtype=np.float32)
            np.testing.assert_allclose(rt.infer(x), expected, rtol=1e-5, atol=1e-6)
        assert rt._loaded is not None and rt._loaded.trt_engine._profile_runs == [1, 2]  # 10 ran as 64


def test_the_dla_core_reaches_the_cache_key_accelerator_and_name(board: Board) -> None:
    board()
    with TensorRTRuntime() as gpu, TensorRTRuntime(TensorRTConfig(dla_core=1)) as dla:
        assert gpu.build_options()["dla"] is None and gpu.target() == "tensorrt"
        assert dla.build_options()["dla"] == {"core": 1, "gpu_fallback": True}
        assert dla.accelerator() == "Orin (sm_87), DLA core 1" and dla.target() == "tensorrt:dla1"
        assert cache_key(gpu, "s" * 64, "fp16") != cache_key(dla, "s" * 64, "fp16")
    assert parse_target("tensorrt:dla1") == ("tensorrt", 1) and parse_target("onnxruntime") == ("onnxruntime", None)
    with pytest.raises(EngineError, match="unknown accelerator"):
        parse_target("tensorrt:gpu0")


# -- the selection ---------------------------------------------------------------------------------------------


def _release() -> ReleaseManifest:
    artifacts = tuple(
        Artifact(name=f"m-{p}.onnx", url=f"m-{p}.onnx", sha256=c * 64, size=1, precision=p)
        for p, c in (("int8", "a"), ("fp16", "b"), ("fp32", "c"))
    )
    return manifest(artifacts=artifacts)


@pytest.mark.parametrize(
    ("cores", "asked", "dla"),
    [
        (2, None, [("tensorrt:dla0", "int8"), ("tensorrt:dla0", "fp16"), ("tensorrt:dla1", "int8"),
                   ("tensorrt:dla1", "fp16")]),
        (2, "int8", [("tensorrt:dla0", "int8"), ("tensorrt:dla1", "int8")]),
        (2, "fp32", []),  # DLA runs no FP32
        (0, None, []),  # no DLA on this board (Orin Nano, x86 GPUs)
    ],
)  # fmt: skip
def test_the_plan_lists_dla_candidates_only_where_the_board_has_dla_cores(
    board: Board, cores: int, asked: Precision | None, dla: list[tuple[str, str]]
) -> None:
    board(dla_cores=cores)
    with TensorRTRuntime() as rt:
        options = plan(_release(), [rt], asked, can_calibrate=False)
    gpu = [(o.runtime, o.artifact.precision) for o in options if o.runtime == "tensorrt"]
    assert gpu == [("tensorrt", p) for p in (("int8", "fp16", "fp32") if asked is None else (asked,))]
    assert [(o.runtime, o.artifact.precision) for o in options if o.runtime != "tensorrt"] == dla


def test_a_runtime_the_config_puts_on_dla_is_its_only_candidate(board: Board) -> None:
    board()
    with TensorRTRuntime(TensorRTConfig(dla_core=1)) as rt:
        options = plan(_release(), [rt], None, can_calibrate=False)
    assert [(o.runtime, o.artifact.precision) for o in options] == [
        ("tensorrt:dla1", "int8"),
        ("tensorrt:dla1", "fp16"),
    ]


def test_a_dla_candidate_runs_on_its_core_and_its_fp32_reference_on_the_gpu(board: Board, tmp_path: Path) -> None:
    """The selection's runtimes: ``tensorrt:dla1`` is TensorRT on DLA core 1; the INT8 gate's FP32 reference of a
    DLA candidate builds on the GPU (DLA runs no FP32)."""
    board()
    cfg = load_config(None, device_id="dev", state_dir=str(tmp_path / "state"), require_signature=False)
    state = AgentState(cfg.state_dir)
    manager = EngineManager(cfg, state, EngineCache(tmp_path / "engines"))
    on_dla = manager.new_runtime("tensorrt:dla1")
    assert isinstance(on_dla, TensorRTRuntime) and on_dla.config.dla_core == 1
    assert manager.new_runtime("tensorrt").target() == "tensorrt"
    artifacts = []
    for precision, path in (("fp16", FP16), ("fp32", FP32)):
        digest = sha256_file(path)
        state.artifact_path(digest).write_bytes(path.read_bytes())
        artifacts.append(Artifact(name=path.name, url=f"device:{digest}", sha256=digest, size=1, precision=precision))
    release = manifest(artifacts=tuple(artifacts))
    new, fp32 = manager._factories("tensorrt:dla1")
    opener = ArtifactOpener(cfg, state, manager.cache, new, release, None, fp32)
    fp16_loaded, reference = opener.open(artifacts[0]), opener.open(artifacts[1])
    try:
        assert fp16_loaded.runtime.target() == "tensorrt:dla1" and fp16_loaded.engine.info["dla_core"] == 1
        assert reference.runtime.target() == "tensorrt" and reference.engine.info["dla_core"] is None
    finally:
        fp16_loaded.runtime.close()
        reference.runtime.close()
        on_dla.close()


def test_bench_takes_a_dla_core_for_tensorrt_only(zoo_onnx: Path) -> None:
    assert runtime_config("tensorrt", dla_core=1) == TensorRTConfig(dla_core=1)
    auto = runtime_config("auto", dla_core=0)
    assert isinstance(auto, AutoConfig) and auto.backend("tensorrt") == TensorRTConfig(dla_core=0)
    with pytest.raises(EdgeloopError, match="--dla-core needs a runtime with DLA cores"):
        bench_command(zoo_onnx, None, 1, None, "onnxruntime", 1, 3, 8, None, rounds=1, dla_core=0)
