"""The ``[runtime]`` table of the TensorRT backend (``type = "tensorrt"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from device.runtimes.base import RuntimeConfig


class TensorRTConfig(RuntimeConfig):
    type: Literal["tensorrt"] = "tensorrt"
    workspace_mb: int = Field(512, ge=16, description="builder workspace limit (keep small on 4-8 GB Jetsons)")
    max_batch: int = Field(256, ge=1, description="largest batch of the optimisation profile")
    opt_batch: int = Field(1, ge=1, description="batch size the builder tunes for")
    sparse_weights: bool = Field(False, description="let TensorRT use 2:4 sparse kernels (Ampere/Orin+)")
    builder_optimization_level: int = Field(3, ge=0, le=5, description="TensorRT builder optimisation level")
    timing_cache: Path | None = Field(None, description="persisted timing cache file (default: state dir)")
    device_index: int = Field(0, ge=0, description="CUDA device to build and run on")
