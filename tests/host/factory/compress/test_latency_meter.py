"""Real measurements on ONNX Runtime (small batches), the runtime settings, and the step's config."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from device.engine.calibration import forms
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from device.engine.runtimes.registry import runtime_config
from host.factory import checkpoint
from host.factory.compress.latency.meter import RuntimeMeter
from host.factory.compress.latency.space import Arch, ResNetSpace
from host.factory.compress.latency.timing import SideBySide, TimingSettings, describe_runtime
from host.factory.compress.recipe import Recipe
from host.factory.compress.steps.prune_latency import PruneLatencyConfig, PruneLatencyStep
from shared import datasets
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta

ORT_INT8 = {"type": "prune_latency", "criterion": "bn_scale", "runtime": "onnxruntime", "precision": "int8"}


def test_a_real_int8_measurement_on_onnxruntime(tiny_ckpt: Path, golden_dir: Path, tmp_path: Path) -> None:
    """Two architectures and a target file, exported, quantized, built once and timed side by side."""
    ck = checkpoint.load(tiny_ckpt)
    space = ResNetSpace(ck.build(), "bn_scale")
    meta = ModelMeta(ck.classes, ck.preprocessing, ck.arch, "fp32", {})
    images = datasets.load_labelled(str(golden_dir), limit=16).images
    settings = TimingSettings("onnxruntime", "int8", batch=8, threads=1, warmup=1, runs=2)
    target = tmp_path / "target.onnx"
    small = Arch(shrink=(1, 1, 1), dropped=(3, 2, 2))
    t0 = time.perf_counter()
    with SideBySide(settings, tmp_path / "work") as timing:
        meter = RuntimeMeter(space, timing, meta, images, forms.U8S7, target_ms=1e6, confirm_runs=3)
        m = meter.measure([space.start(), small])
        assert meter.built == 2 and set(m.ms) == {space.start(), small} and m.target_ms == 1e6
        assert all(0 < ms < 5000 for ms in m.ms.values())
        lo, hi = m.spread[small]
        assert lo <= m.ms[small] <= hi
        meter.measure([small], confirm=True)
        assert meter.built == 2  # cached by architecture: nothing exported or built again
        int8 = next((tmp_path / "work").glob("arch-1/model-int8.onnx"))
        int8.rename(target)
    with SideBySide(settings, tmp_path / "work2") as timing:
        meter = RuntimeMeter(space, timing, meta, images, forms.U8S7, target_onnx=target)
        m = meter.measure([small])
        assert m.target_ms > 0 and meter.built == 1  # the target file is timed in the same rounds
    assert time.perf_counter() - t0 < 60


def test_runtime_settings_by_registry_name() -> None:
    config = runtime_config("onnxruntime", threads=2, batches=(256,))
    assert isinstance(config, OnnxRuntimeConfig) and config.threads == 2 and config.max_batch == 256
    info = describe_runtime(TimingSettings("onnxruntime", "int8"))
    assert info["runtime"] == "onnxruntime" and info["accelerator"] == "cpu" and info["version"]
    with pytest.raises(EdgeloopError, match="unknown runtime 'nope'"):
        runtime_config("nope")


def test_a_runtime_that_cannot_run_here_fails_before_any_training() -> None:
    """TensorRT is registered but not installed on a CPU machine: the step's preflight says why."""
    config = PruneLatencyConfig.model_validate({**ORT_INT8, "runtime": "tensorrt", "target_ms": 10})
    with pytest.raises(EdgeloopError, match="tensorrt was forced by the config but cannot run here"):
        PruneLatencyStep().preflight(config)


def test_target_file_checks(tmp_path: Path, zoo_onnx: Path) -> None:
    missing = PruneLatencyConfig.model_validate({**ORT_INT8, "target_onnx": str(tmp_path / "none.onnx")})
    with pytest.raises(EdgeloopError, match=r"target_onnx .* not found"):
        PruneLatencyStep().preflight(missing)
    wrong = PruneLatencyConfig.model_validate({**ORT_INT8, "target_onnx": str(zoo_onnx)})
    with pytest.raises(EdgeloopError, match="is fp32, not int8"):
        PruneLatencyStep().preflight(wrong)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({**ORT_INT8}, "exactly one of target_ms"),
        ({**ORT_INT8, "target_ms": 5, "target_onnx": "x.onnx"}, "exactly one of target_ms"),
        ({**ORT_INT8, "target_ms": 5, "runtime": "nope"}, "unknown runtime 'nope'; registered runtimes: "),
        ({**ORT_INT8, "target_ms": 5, "precision": "fp16"}, "precision"),
        ({**ORT_INT8, "target_ms": -1}, "target_ms"),
        ({**ORT_INT8, "target_ms": 5, "batch": 0}, "batch"),
        ({**ORT_INT8, "target_ms": 5, "target_speedup": 1.4}, "target_speedup divides target_onnx"),
        ({**ORT_INT8, "target_onnx": "x.onnx", "target_speedup": 0.9}, "target_speedup"),
    ],
)
def test_config_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Recipe.model_validate({"name": "x", "steps": [table]})


def test_the_shipped_recipe_times_against_the_slim_int8_file() -> None:
    from host.factory.compress.recipe import load_recipe
    from host.factory.compress.recipes import builtin_recipes

    recipe, _ = load_recipe(builtin_recipes()["resnet20-latency"])
    step = next(s for s in recipe.steps if isinstance(s, PruneLatencyConfig))
    assert step.target_onnx == "host/zoo/resnet20-slim-int8.onnx" and step.precision == "int8" and step.batch == 256
    finetune = [s.model_dump() for s in recipe.steps if s.type in ("sparsity_train", "finetune")]
    assert [t["epochs"] for t in finetune] == [5, 15]  # resnet20-slim's budget
    assert np.isclose(finetune[1]["distill"]["alpha"], 0.9)


class _FixedTiming:
    """``SideBySide``'s interface with fixed samples: the target file takes 140 ms, every candidate 100."""

    def __init__(self) -> None:
        self.keys: set[object] = set()

    def add(self, key: object, path: Path) -> None:
        self.keys.add(key)

    def has(self, key: object) -> bool:
        return key in self.keys

    def time(self, keys: list[object], runs: int | None = None) -> dict[object, list[float]]:
        return {k: [140.0, 141.0, 139.0] if k == "target" else [100.0] for k in keys}


def test_target_speedup_divides_the_target_files_latency(tiny_ckpt: Path, tmp_path: Path) -> None:
    ck = checkpoint.load(tiny_ckpt)
    space = ResNetSpace(ck.build(), "bn_scale")
    meta = ModelMeta(ck.classes, ck.preprocessing, ck.arch, "fp32", {})
    timing = _FixedTiming()
    timing.add(space.start(), tmp_path / "x.onnx")  # already built: nothing is exported
    empty = np.zeros((0, 32, 32, 3), np.uint8)
    for speedup, target in ((1.0, 140.0), (1.4, 100.0)):
        meter = RuntimeMeter(space, timing, meta, empty, forms.U8S7, target_onnx=tmp_path / "t.onnx",  # type: ignore[arg-type]
                             target_speedup=speedup)  # fmt: skip
        assert meter.measure([space.start()]).target_ms == pytest.approx(target)


def test_the_onnx_runtime_recipe_aims_at_a_speedup_over_the_unpruned_int8() -> None:
    from host.factory.compress.recipe import load_recipe
    from host.factory.compress.recipes import builtin_recipes

    recipe, _ = load_recipe(builtin_recipes()["resnet20-fast-ort"])
    step = next(s for s in recipe.steps if isinstance(s, PruneLatencyConfig))
    assert step.target_onnx == "host/zoo/resnet20-int8.onnx" and step.runtime == "onnxruntime"
    assert step.target_speedup >= 1.3 and step.precision == "int8"
    PruneLatencyStep().preflight(step)  # the target file exists and is INT8
