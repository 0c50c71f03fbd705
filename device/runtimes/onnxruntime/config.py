"""The ``[runtime]`` table of the ONNX Runtime backend (``type = "onnxruntime"``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device.runtimes.base import RuntimeConfig


class OnnxRuntimeConfig(RuntimeConfig):
    type: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] | None = Field(
        None, description="execution providers in priority order; default: CUDA when present, then CPU"
    )
    intra_op_threads: int = Field(0, ge=0, description="threads per operator; 0 = one per core")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ORT graph optimisation level applied when the engine is built"
    )
    max_batch: int = Field(1024, ge=1, description="largest batch accepted by a dynamic-batch model")
