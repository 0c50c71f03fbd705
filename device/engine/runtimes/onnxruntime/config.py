"""The ``[runtime]`` table of the ONNX Runtime backend (``type = "onnxruntime"``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device.engine.runtimes.base import RuntimeConfig, legacy_threads


class OnnxRuntimeConfig(RuntimeConfig):
    type: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] | None = Field(
        None, description="execution providers in priority order; default: CUDA when present, then CPU"
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ORT graph optimisation level applied when the engine is built"
    )
    max_batch: int = Field(1024, ge=1, description="largest batch accepted by a dynamic-batch model")

    @model_validator(mode="before")
    @classmethod
    def _legacy_threads(cls, data: object) -> object:
        """``intra_op_threads`` was this table's name for ``threads`` (ORT's intra-op threads; inter-op is 1)."""
        return legacy_threads(data, "intra_op_threads", "runtime.onnxruntime")
