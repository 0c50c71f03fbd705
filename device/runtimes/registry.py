"""Explicit registry of inference backends and the automatic choice between them.

Adding a backend = one module with a ``<Name>Config`` (``type: Literal[key]``) and a ``Runtime``
subclass, plus one ``register`` line here and one member in ``RuntimeConfig``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from device.runtimes.base import Runtime, RuntimeUnavailableError
from device.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from device.runtimes.tensorrt import TensorRTConfig, TensorRTRuntime

log = logging.getLogger(__name__)


class AutoConfig(BaseModel):
    """Pick TensorRT when it imports and a CUDA device exists, else ONNX Runtime."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["auto"] = "auto"
    tensorrt: TensorRTConfig = TensorRTConfig()
    onnxruntime: OnnxRuntimeConfig = OnnxRuntimeConfig()


RuntimeConfig = Annotated[AutoConfig | OnnxRuntimeConfig | TensorRTConfig, Field(discriminator="type")]

_RUNTIMES: dict[str, type[Runtime]] = {}


def register(cls: type[Runtime]) -> type[Runtime]:
    if cls.name in _RUNTIMES:
        raise ValueError(f"runtime {cls.name!r} registered twice")
    _RUNTIMES[cls.name] = cls
    return cls


register(TensorRTRuntime)
register(OnnxRuntimeRuntime)


def names() -> list[str]:
    return list(_RUNTIMES)


def runtime_class(name: str) -> type[Runtime]:
    try:
        return _RUNTIMES[name]
    except KeyError:
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; choose one of {', '.join(_RUNTIMES)}") from None


def create(config: AutoConfig | OnnxRuntimeConfig | TensorRTConfig | None = None) -> Runtime:
    """Instantiate the configured backend; ``auto`` falls back from TensorRT to ONNX Runtime."""
    config = config or AutoConfig()
    if isinstance(config, TensorRTConfig):
        reason = TensorRTRuntime.probe()
        if reason:
            raise RuntimeUnavailableError(f"tensorrt was forced by the config but cannot run here: {reason}")
        return TensorRTRuntime(config)
    if isinstance(config, OnnxRuntimeConfig):
        return OnnxRuntimeRuntime(config)
    reason = TensorRTRuntime.probe()
    if reason is None:
        return TensorRTRuntime(config.tensorrt)
    log.info("tensorrt unavailable (%s); using onnxruntime", reason.split(":")[0])
    return OnnxRuntimeRuntime(config.onnxruntime)
