"""What every runtime does the same way (``Runtime``'s public methods), shown on ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.engine.runtimes import EngineError
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime


def test_input_checks(zoo_onnx: Path, tmp_path: Path) -> None:
    with OnnxRuntimeRuntime(OnnxRuntimeConfig(max_batch=8)) as rt:
        with pytest.raises(EngineError, match="no engine"):
            rt.infer(np.zeros((1, 3, 32, 32), np.float32))
        rt.load(rt.build(zoo_onnx, "fp32", tmp_path))
        with pytest.raises(EngineError, match="float32"):
            rt.infer(np.zeros((1, 3, 32, 32), np.float64))
        with pytest.raises(EngineError, match="shape"):
            rt.infer(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(EngineError, match="batch size"):
            rt.infer(np.zeros((9, 3, 32, 32), np.float32))
    with pytest.raises(EngineError, match="closed"):
        rt.build(zoo_onnx, "fp32", tmp_path)


def test_engine_from_other_runtime_is_refused(zoo_onnx: Path, tmp_path: Path) -> None:
    with OnnxRuntimeRuntime() as rt:
        engine = rt.build(zoo_onnx, "fp32", tmp_path)
        with pytest.raises(EngineError, match="built by tensorrt"):
            rt.load(replace(engine, runtime="tensorrt"))
