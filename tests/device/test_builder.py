from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.builder import EngineCache, cache_key
from device.runtimes import EngineError
from device.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime


def test_second_build_is_a_cache_hit(zoo_onnx: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    with OnnxRuntimeRuntime() as rt:
        e1, hit1 = cache.get_or_build(rt, zoo_onnx, "a" * 64, "fp32")
        e2, hit2 = cache.get_or_build(rt, zoo_onnx, "a" * 64, "fp32")
        _, hit3 = cache.get_or_build(rt, zoo_onnx, "a" * 64, "int8")  # other precision: other engine
    assert (hit1, hit2, hit3) == (False, True, False)
    assert e1.path == e2.path and e1.path.is_file()
    assert len(cache.entries()) == 2


def test_key_covers_runtime_version_accelerator_and_options(zoo_onnx: Path) -> None:
    with OnnxRuntimeRuntime() as a, OnnxRuntimeRuntime(OnnxRuntimeConfig(graph_optimization="basic")) as b:
        ka, kb = cache_key(a, "s" * 64, "fp32"), cache_key(b, "s" * 64, "fp32")
    assert {"onnx_sha256", "precision", "runtime", "runtime_version", "accelerator", "options"} <= set(ka)
    assert ka != kb


class CrashingRuntime(OnnxRuntimeRuntime):
    def _build_impl(self, onnx_path: Path, precision: Any, out_dir: Path) -> Any:
        (out_dir / "half-written.plan").write_bytes(b"partial")
        raise EngineError("out of memory while building")


def test_crash_mid_build_leaves_nothing_behind(zoo_onnx: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    with CrashingRuntime() as rt, pytest.raises(EngineError):
        cache.get_or_build(rt, zoo_onnx, "b" * 64, "fp32")
    assert cache.entries() == []
    assert not list(tmp_path.glob(".build-*"))


def test_stale_partial_builds_are_cleaned_at_start(tmp_path: Path) -> None:
    (tmp_path / ".build-dead").mkdir(parents=True)
    (tmp_path / ".build-dead" / "x").write_bytes(b"1")
    EngineCache(tmp_path)
    assert not (tmp_path / ".build-dead").exists()
