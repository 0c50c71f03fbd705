from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.engine.builder import EngineCache, cache_key, key_digest
from device.engine.jetson import release
from device.engine.runtimes import EngineError
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime


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
    covered = {"onnx_sha256", "precision", "runtime", "runtime_version", "accelerator", "options", "l4t_release"}
    assert covered <= set(ka)
    assert ka != kb


def test_a_jetpack_upgrade_changes_the_key(zoo_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The L4T release is in the key of every runtime: a JetPack upgrade rebuilds the engines; None off a Jetson."""
    with OnnxRuntimeRuntime() as rt:
        monkeypatch.setattr(release, "l4t_release", lambda: None)
        off = cache_key(rt, "s" * 64, "fp32")
        monkeypatch.setattr(release, "l4t_release", lambda: "R36.3.0")
        before = cache_key(rt, "s" * 64, "fp32")
        monkeypatch.setattr(release, "l4t_release", lambda: "R36.4.3")
        after = cache_key(rt, "s" * 64, "fp32")
    assert off["l4t_release"] is None and before["l4t_release"] == "R36.3.0"
    assert len({key_digest(off), key_digest(before), key_digest(after)}) == 3


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
