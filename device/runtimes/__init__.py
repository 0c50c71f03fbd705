"""Inference backends behind one ABC (``Runtime``) and a registry that everything reads.

Each backend is one folder with the same files (``config.py``, ``loader.py``, ``runner.py``,
``util.py``); its runner registers itself with ``@registry.register``. ``BACKENDS`` below imports
them, which is the one place a new backend is added.
"""

from device.runtimes import onnxruntime, openvino, tensorrt
from device.runtimes.base import (
    Engine,
    EngineError,
    Precision,
    Runtime,
    RuntimeConfig,
    RuntimeUnavailableError,
    Timing,
)
from device.runtimes.registry import AutoConfig, create, names, parse_config, register, runtime_class

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
    "names",
    "parse_config",
    "register",
    "runtime_class",
]
