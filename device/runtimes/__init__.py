"""Inference backends behind one ABC (``Runtime``) and an explicit registry."""

from device.runtimes.base import Engine, EngineError, Precision, Runtime, RuntimeUnavailableError, Timing
from device.runtimes.registry import AutoConfig, RuntimeConfig, create, names, runtime_class

__all__ = [
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
    "runtime_class",
]
