"""TensorRT backend (``type = "tensorrt"``): config, loader (ONNX -> engine), runner, util.

TensorRT and cuda-python are imported lazily, so this package imports on any machine.
"""

from device.engine.runtimes.tensorrt.config import TensorRTConfig
from device.engine.runtimes.tensorrt.runner import TensorRTRuntime

__all__ = ["TensorRTConfig", "TensorRTRuntime"]
