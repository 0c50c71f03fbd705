"""TensorRT backend (``type = "tensorrt"``): config, loader (ONNX -> engine), runner, util.

TensorRT and cuda-python are imported lazily, so this package imports on any machine.
"""

from device.runtimes.tensorrt.config import TensorRTConfig
from device.runtimes.tensorrt.runner import TensorRTRuntime

__all__ = ["TensorRTConfig", "TensorRTRuntime"]
