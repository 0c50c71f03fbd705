"""Inference backends behind one ABC (``Runtime``) and a registry that everything reads.

Each backend is one folder with the same files (``config.py``, ``loader.py``, ``runner.py``,
``util.py``); its runner registers itself with ``@registry.register``. ``BACKENDS`` below imports
them, which is the one place a new backend is added. ``open_onnx`` is how an ONNX file is run:
``with open_onnx("onnxruntime", path) as rt: rt.infer(batch)``.
"""

from device.engine.runtimes import onnxruntime, openvino, tensorrt
from device.engine.runtimes.base import (
    Engine,
    EngineError,
    Precision,
    Runtime,
    RuntimeConfig,
    RuntimeUnavailableError,
    Timing,
)
from device.engine.runtimes.registry import (
    AutoConfig,
    create,
    load_onnx,
    names,
    open_onnx,
    parse_config,
    register,
    runtime_class,
    runtime_config,
)

# every backend package, imported for its registration (the order does not matter: ``priority`` does)
BACKENDS = (tensorrt, openvino, onnxruntime)

__all__ = [
    "BACKENDS",
    "AutoConfig",
    "Engine",
    "EngineError",
    "Precision",
    "Runtime",
    "RuntimeConfig",
    "RuntimeUnavailableError",
    "Timing",
    "create",
    "load_onnx",
    "names",
    "open_onnx",
    "parse_config",
    "register",
    "runtime_class",
    "runtime_config",
]
