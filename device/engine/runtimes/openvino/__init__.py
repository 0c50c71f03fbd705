"""OpenVINO backend (``type = "openvino"``): config, loader (ONNX -> engine), runner, util.

OpenVINO is imported lazily (the ``openvino`` extra), so this package imports on any machine.
"""

from device.engine.runtimes.openvino.config import OpenVINOConfig
from device.engine.runtimes.openvino.runner import OpenVINORuntime
from device.engine.runtimes.openvino.util import layer_times

__all__ = ["OpenVINOConfig", "OpenVINORuntime", "layer_times"]
