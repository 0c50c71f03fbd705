"""The ``[runtime]`` table of the TensorRT backend (``type = "tensorrt"``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from device.engine.runtimes.base import RuntimeConfig

log = logging.getLogger(__name__)

DLA_MAX_BATCH = 4096  # TensorRT's "DLA Supported Layers and Restrictions"


class TensorRTConfig(RuntimeConfig):
    type: Literal["tensorrt"] = "tensorrt"
    workspace_mb: int = Field(512, ge=16, description="builder workspace limit (keep small on 4-8 GB Jetsons)")
    max_batch: int = Field(256, ge=1, description="largest batch the engine accepts (the last profile's top)")
    opt_batches: tuple[int, ...] = Field(
        (1, 64),
        min_length=1,
        description=(
            "batch sizes the engine is tuned for: one optimisation profile each, covering the batches above the "
            "previous one up to it (plus one up to max_batch); the daemon measures latency at 1 and throughput at 64"
        ),
    )
    sparse_weights: bool = Field(
        False, description="allow 2:4 sparse kernels (Ampere/Orin+) for files marked 2:4 (the manifest's sparsity)"
    )
    allow_tf32: bool = Field(
        False, description="let fp32 engines use TF32 Tensor Cores (Ampere/Orin+); off, fp32 means IEEE FP32"
    )
    builder_optimization_level: int = Field(3, ge=0, le=5, description="TensorRT builder optimisation level")
    timing_cache: Path | None = Field(None, description="persisted timing cache file (default: one in cache_dir)")
    cache_dir: Path | None = Field(
        None,
        description=(
            "where timing caches persist, one file per TensorRT version and GPU "
            "(the agent sets STATE_DIR/runtime-cache/tensorrt; unset and no timing_cache: none is kept)"
        ),
    )
    device_index: int = Field(0, ge=0, description="CUDA device to build and run on")
    dla_core: int | None = Field(
        None,
        ge=0,
        le=15,
        description=(
            "build and run on this DLA core (NVIDIA's Deep Learning Accelerator: Jetson AGX Orin, Orin NX 16GB, "
            "AGX Xavier and Xavier NX have two, 0 and 1; Orin NX 8GB one); DLA runs FP16 and INT8 only. None: the "
            "GPU. Under auto the selection tries every DLA core the board has by itself"
        ),
    )
    gpu_fallback: bool = Field(
        True,
        description="on DLA, run the layers DLA cannot on the GPU (off: such a model fails to build)",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_opt_batch(cls, data: object) -> object:
        """``opt_batch = N`` (one profile tuned for N) was this table's field before ``opt_batches``."""
        if isinstance(data, dict) and "opt_batch" in data:
            data = dict(data)
            legacy = data.pop("opt_batch")
            log.warning("[runtime.tensorrt] opt_batch is replaced by opt_batches; read as opt_batches = [%s]", legacy)
            data.setdefault("opt_batches", (legacy,))
        return data

    @model_validator(mode="after")
    def _batches_positive(self) -> TensorRTConfig:
        if any(b < 1 for b in self.opt_batches):
            raise ValueError(f"opt_batches must be batch sizes >= 1, got {list(self.opt_batches)}")
        if self.dla_core is not None and self.max_batch > DLA_MAX_BATCH:
            raise ValueError(f"DLA runs batches of at most {DLA_MAX_BATCH}: set max_batch <= {DLA_MAX_BATCH}")
        return self

    def profile_batches(self) -> list[tuple[int, int, int]]:
        """(min, opt, max) batch of each optimisation profile: disjoint ranges, each tuned for its top.

        On DLA each profile is one batch (min = opt = max): DLA has no dynamic dimensions, so a smaller
        batch runs padded up to the next profile's."""
        tops = sorted({b for b in self.opt_batches if b < self.max_batch} | {self.max_batch})
        if self.dla_core is not None:
            return [(top, top, top) for top in tops]
        lows = [1, *(t + 1 for t in tops[:-1])]
        return [(lo, top, top) for lo, top in zip(lows, tops, strict=True)]
