from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.engine.runtimes import EngineError, RuntimeUnavailableError
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime, layer_times


def test_build_load_infer(zoo_onnx: Path, tmp_path: Path) -> None:
    with OnnxRuntimeRuntime() as rt:
        engine = rt.build(zoo_onnx, "fp32", tmp_path)
        assert engine.path.is_file() and engine.input_shape == (3, 32, 32) and engine.input_name == "input"
        rt.load(engine)
        out = rt.infer(np.zeros((4, 3, 32, 32), np.float32))
        assert out.shape == (4, 10) and out.dtype == np.float32
        assert rt.last_timing is not None and rt.last_timing.total_ms > 0


@pytest.mark.security
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_onnx_is_a_clear_error(zoo_onnx: Path, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.onnx"
    data = zoo_onnx.read_bytes()
    bad.write_bytes({"garbage": b"\x00not onnx" * 100, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with OnnxRuntimeRuntime() as rt, pytest.raises(EngineError, match="cannot load"):
        rt.build(bad, "fp32", tmp_path / "out")


def test_missing_provider_is_a_clear_error() -> None:
    with pytest.raises(RuntimeUnavailableError, match="not available"):
        OnnxRuntimeRuntime(OnnxRuntimeConfig(providers=["NoSuchExecutionProvider"]))


def test_profile_layers_covers_every_conv(zoo_onnx: Path, tmp_path: Path) -> None:
    import onnx

    convs = sum(n.op_type == "Conv" for n in onnx.load(str(zoo_onnx)).graph.node)
    with OnnxRuntimeRuntime() as rt:
        with pytest.raises(EngineError):
            rt.profile_layers()  # nothing loaded yet
        rt.load(rt.build(zoo_onnx, "fp32", tmp_path))
        layers = rt.profile_layers(batch=8, runs=2)
        with pytest.raises(EngineError):
            rt.profile_layers(runs=0)
    conv_layers = [x for x in layers if "Conv" in x.op]
    assert len(conv_layers) == convs  # ORT fuses BN/ReLU into the convs but keeps one node per conv
    assert all(x.ms > 0 for x in conv_layers)
    assert conv_layers[0].output_shape is not None and conv_layers[0].output_shape[0] == 8


def test_layer_times_drop_the_warm_up_call() -> None:
    def ev(name: str, dur: float) -> dict[str, Any]:
        args = {"op_name": "Conv", "output_type_shape": [{"float": [1, 16, 32, 32]}]}
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": args}

    events = [ev("a", 900.0), ev("b", 50.0), ev("a", 100.0), ev("b", 30.0), ev("a", 300.0), {"cat": "Session"}]
    got = layer_times(events)
    assert [x.name for x in got] == ["a", "b"]
    assert got[0].ms == pytest.approx(0.2) and got[1].ms == pytest.approx(0.03)
    assert got[0].output_shape == (1, 16, 32, 32) and got[0].op == "Conv"
