"""ONNX Runtime backend (``type = "onnxruntime"``): config, loader (ONNX -> engine), runner, util."""

from device.engine.runtimes.onnxruntime.config import OnnxRuntimeConfig
from device.engine.runtimes.onnxruntime.runner import OnnxRuntimeRuntime
from device.engine.runtimes.onnxruntime.util import layer_times

__all__ = ["OnnxRuntimeConfig", "OnnxRuntimeRuntime", "layer_times"]
