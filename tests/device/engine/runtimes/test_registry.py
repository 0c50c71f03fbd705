from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import device.engine.runtimes
from device.engine.runtimes import EngineError, RuntimeUnavailableError, registry
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from device.engine.runtimes.openvino import OpenVINORuntime
from device.engine.runtimes.tensorrt import TensorRTConfig, TensorRTRuntime
from shared.compat import tomllib
from tests.device.fakes import FakeConfig, FakeRuntime
from tests.helpers import REPO

BACKEND_FILES = {"__init__.py", "config.py", "loader.py", "runner.py", "util.py"}


def test_auto_falls_back_to_a_cpu_runtime_without_a_gpu() -> None:
    """OpenVINO where the openvino extra is installed, else ONNX Runtime (tests/device/engine/runtimes/test_openvino.py
    patches the openvino import away to check the second)."""
    if TensorRTRuntime.probe() is None:
        pytest.skip("a TensorRT GPU is present here")
    with registry.create(registry.AutoConfig()) as rt:
        assert rt.name == ("openvino" if OpenVINORuntime.probe() is None else "onnxruntime")
        assert rt.accelerator().startswith("cpu") and not rt.uses_gpu()
    with pytest.raises(RuntimeUnavailableError, match="forced"):
        registry.create(TensorRTConfig())


def test_registry_is_explicit() -> None:
    assert registry.names() == ["tensorrt", "openvino", "onnxruntime"]
    with pytest.raises(RuntimeUnavailableError):
        registry.runtime_class("nosuch")


def test_every_backend_is_one_folder_of_the_same_files() -> None:
    """A reader who knows one backend knows them all; and a backend folder nobody imports is caught."""
    root = REPO / "device" / "engine" / "runtimes"
    folders = sorted(p.parent.name for p in root.glob("*/__init__.py"))
    assert folders == sorted(registry.names())
    for name in folders:
        assert {p.name for p in (root / name).glob("*.py")} == BACKEND_FILES, name
        cls = registry.runtime_class(name)
        assert cls.__module__ == f"device.engine.runtimes.{name}.runner"
        assert cls.config_class.__module__ == f"device.engine.runtimes.{name}.config"
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in device.engine.runtimes.BACKENDS) == folders


def test_a_registered_backend_is_created_from_its_config(fake_runtime: type[FakeRuntime], tmp_path: Path) -> None:
    assert registry.names()[0] == "fake" and "fake" in registry.config_types()
    config = registry.parse_config({"type": "fake", "classes": 3})
    assert isinstance(config, FakeConfig)
    with registry.create(config) as rt:
        assert isinstance(rt, FakeRuntime) and rt.config.classes == 3


def test_auto_tries_the_backends_by_priority(fake_runtime: type[FakeRuntime], monkeypatch: pytest.MonkeyPatch) -> None:
    auto = registry.parse_config({"type": "auto", "fake": {"classes": 4}})
    assert isinstance(auto, registry.AutoConfig) and set(auto.backends) == {
        "fake",
        "tensorrt",
        "openvino",
        "onnxruntime",
    }
    with registry.create(auto) as rt:
        assert isinstance(rt, FakeRuntime) and rt.config.classes == 4  # its own sub-table
    monkeypatch.setattr(FakeRuntime, "available", False)
    usable = [n for n in registry.names()[1:] if registry.runtime_class(n).probe() is None]
    with registry.create(auto) as rt:
        assert rt.name == usable[0]
    with pytest.raises(RuntimeUnavailableError, match="forced"):
        registry.create(FakeConfig())


def test_auto_without_any_usable_backend_names_every_reason(
    fake_runtime: type[FakeRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_RUNTIMES", {"fake": FakeRuntime})
    monkeypatch.setattr(FakeRuntime, "available", False)
    with pytest.raises(RuntimeUnavailableError, match="no runtime can run here: fake: fake: switched off"):
        registry.create()


def test_auto_sub_tables_validate_through_the_registry() -> None:
    auto = registry.parse_config({"type": "auto", "onnxruntime": {"intra_op_threads": 2}})
    assert isinstance(auto, registry.AutoConfig)
    ort = auto.backend("onnxruntime")
    assert isinstance(ort, OnnxRuntimeConfig) and ort.threads == 2
    assert isinstance(auto.backend("tensorrt"), TensorRTConfig)  # left out: its defaults
    # dumped as written: one sub-table per backend, every field
    dumped = auto.model_dump()
    assert list(dumped) == ["type", "tensorrt", "openvino", "onnxruntime"]
    assert dumped["onnxruntime"] == OnnxRuntimeConfig(threads=2).model_dump()
    with pytest.raises(ValueError, match="unknown runtime 'nosuch' under auto; known: tensorrt, openvino, onnxruntime"):
        registry.parse_config({"type": "auto", "nosuch": {}})
    with pytest.raises(ValueError, match=r"tensorrt\.max_batch"):
        registry.parse_config({"type": "auto", "tensorrt": {"max_batch": 0}})


def test_threads_is_every_backends_field_and_the_old_names_still_read() -> None:
    """One ``threads`` for all backends; the tables written before it (``intra_op_threads``,
    ``inference_num_threads``) mean the same, and 0 is the backend's default, as unset."""
    for name in registry.names():
        assert registry.parse_config({"type": name, "threads": 3}).threads == 3
        assert registry.parse_config({"type": name, "threads": 0}) == registry.parse_config({"type": name})
    assert registry.parse_config({"type": "onnxruntime", "intra_op_threads": 2}) == OnnxRuntimeConfig(threads=2)
    assert registry.parse_config({"type": "openvino", "inference_num_threads": 2}).threads == 2
    with pytest.raises(ValueError, match="both threads and intra_op_threads"):
        registry.parse_config({"type": "onnxruntime", "intra_op_threads": 2, "threads": 4})
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        registry.parse_config({"type": "onnxruntime", "threads": -1})


def test_open_onnx_yields_a_loaded_runtime_and_closes_it(zoo_onnx: Path, tmp_path: Path) -> None:
    with registry.open_onnx("onnxruntime", zoo_onnx) as rt:
        assert rt.engine.runtime == "onnxruntime"
        assert rt.infer(np.zeros((2, *rt.engine.input_shape), np.float32)).shape == (2, 10)
        work = rt.engine.path.parent
    assert rt._closed and not work.exists()  # closed, and its temporary folder gone
    made = registry.create(OnnxRuntimeConfig(threads=1))
    with pytest.raises(EngineError, match="ONNX model not found"), registry.open_onnx(made, tmp_path / "nope.onnx"):
        pass
    assert made._closed  # a runtime handed over is closed on failure too
    with registry.open_onnx(OnnxRuntimeConfig(), zoo_onnx, "fp32", tmp_path / "e") as rt:
        assert rt.engine.path.is_relative_to(tmp_path / "e")
    assert (tmp_path / "e").is_dir()  # a work folder of the caller's is left


def test_unknown_or_missing_type_names_the_known_types() -> None:
    known = "auto, onnxruntime, openvino, tensorrt"
    with pytest.raises(ValueError, match=f"unknown runtime type 'nosuch'; known types: {known}"):
        registry.parse_config({"type": "nosuch"})
    with pytest.raises(ValueError, match=f"no `type`; known types: {known}"):
        registry.parse_config({"intra_op_threads": 2})


def test_register_refuses_a_second_backend_of_the_same_name(fake_runtime: type[FakeRuntime]) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(FakeRuntime)

    class Mismatched(FakeRuntime):
        name = "other"

    with pytest.raises(ValueError, match="has type 'fake'"):
        registry.register(Mismatched)


def test_the_example_agent_config_runtime_table_validates() -> None:
    """deploy/agent.toml: ``auto`` with a sub-table per backend, validated by each backend's model."""
    table = tomllib.loads((REPO / "deploy" / "agent.toml").read_text())["runtime"]
    auto = registry.parse_config(table)
    assert isinstance(auto, registry.AutoConfig)
    trt = auto.backend("tensorrt")
    assert isinstance(trt, TensorRTConfig) and trt.sparse_weights and trt.max_batch == 64
