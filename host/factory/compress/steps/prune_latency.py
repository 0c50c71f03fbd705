"""``prune_latency``: structural pruning to a latency measured on a named runtime, not to a MAC count.

A step of its own rather than a ``target_latency`` table on ``prune``: the two share only which
channels go (``PruneKnobs``). ``prune`` ranks channels globally until a MAC count is met, in one
Torch-Pruning pass; this one needs a runtime, a precision, a batch and threads to measure on, a
target that is a time or a file to be timed beside, and a search over per-stage widths and whole
blocks that builds and times each candidate (``compress.latency``). One model with optional fields
for both would let a recipe mix a MAC target with a runtime that nothing reads.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from torch import nn

from device.engine import sysinfo
from device.engine.runtimes import registry
from host.factory.compress.context import Context
from host.factory.compress.latency.meter import RuntimeMeter
from host.factory.compress.latency.search import SearchResult, search
from host.factory.compress.latency.space import Arch, ResNetSpace
from host.factory.compress.latency.timing import SideBySide, TimingSettings, describe_runtime
from host.factory.compress.steps.base import CompressionStep, PruneKnobs, register_step
from host.factory.compress.steps.ptq import form_for
from host.factory.layout import contiguous
from host.factory.stats import count_params
from shared.errors import EdgeloopError
from shared.modelmeta import read_meta

log = logging.getLogger(__name__)


class PruneLatencyConfig(PruneKnobs):
    """Pruning to a latency measured on a runtime: per-stage widths and whole residual blocks."""

    type: Literal["prune_latency"] = Field(description="structural pruning to a measured latency")
    runtime: str = Field(description="registry name of the runtime to measure on: onnxruntime, openvino, tensorrt, ...")
    precision: Literal["fp32", "int8"] = Field(
        description="what is timed: the FP32 ONNX, or its INT8 Q/DQ file in this runtime's form (as ptq writes it)"
    )
    batch: int = Field(256, ge=1, le=4096, description="images per timed call")
    threads: int = Field(0, ge=0, le=256, description="the runtime's thread count (0: its default, one per core)")
    target_ms: float | None = Field(
        None, gt=0, description="the latency to reach, in ms per call of `batch` images (not per image)"
    )
    target_onnx: str | None = Field(
        None,
        description="an ONNX file (in `precision`) whose latency is the target, timed in the same rounds as each "
        "candidate; a path relative to where edgeloop compress runs",
    )
    target_speedup: float = Field(
        1.0,
        ge=1.0,
        le=10.0,
        description="with target_onnx: reach that file's latency divided by this (1.4: 1.4x as fast as it, "
        "measured side by side)",
    )
    remove_blocks: bool = Field(True, description="the search may remove residual blocks (identity shortcut, stride 1)")
    runs: int = Field(5, ge=1, le=100, description="interleaved timed rounds per candidate; the median counts")
    confirm_runs: int = Field(15, ge=1, le=200, description="rounds that confirm each architecture against the target")
    warmup: int = Field(1, ge=0, le=50, description="untimed calls of each engine before its rounds")
    calibration_images: int = Field(32, ge=1, le=1024, description="training images that calibrate INT8 candidates")
    weight_bits: Literal[7, 8] = Field(7, description="INT8 weight bits of the timed files (ptq's default: 7)")
    max_iterations: int = Field(40, ge=1, le=500, description="most moves the search takes")

    @field_validator("runtime")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in registry.names():
            raise ValueError(f"unknown runtime {name!r}; registered runtimes: {', '.join(registry.names())}")
        return name

    @model_validator(mode="after")
    def _one_target(self) -> PruneLatencyConfig:
        if (self.target_ms is None) == (self.target_onnx is None):
            raise ValueError("give exactly one of target_ms (ms per batch) and target_onnx (a file to time beside)")
        if self.target_speedup != 1.0 and self.target_onnx is None:
            raise ValueError("target_speedup divides target_onnx's latency: give target_onnx with it")
        return self

    def settings(self) -> TimingSettings:
        return TimingSettings(self.runtime, self.precision, self.batch, self.threads, self.warmup, self.runs)


@register_step
class PruneLatencyStep(CompressionStep[PruneLatencyConfig]):
    config = PruneLatencyConfig
    changes_model = True

    def preflight(self, config: PruneLatencyConfig) -> None:
        describe_runtime(config.settings())  # unknown, not installed, or not this precision: says which
        if config.target_onnx is not None:
            path = Path(config.target_onnx)
            if not path.is_file():
                raise EdgeloopError(f"prune_latency: target_onnx {path} not found (relative to {Path.cwd()})")
            precision = read_meta(path).precision
            if precision != config.precision:
                raise EdgeloopError(f"prune_latency: target_onnx {path} is {precision}, not {config.precision}")

    def run(self, ctx: Context, config: PruneLatencyConfig) -> dict[str, Any]:
        self.preflight(config)
        ctx.model = contiguous(ctx.model)
        before = ctx.model
        space = ResNetSpace(
            before, config.criterion, config.round_to, config.max_layer_ratio, config.remove_blocks, ctx.prep.size
        )
        settings = config.settings()
        runtime = describe_runtime(settings)
        int8 = config.precision == "int8"
        images = ctx.calibration_images(config.calibration_images) if int8 else np.zeros((0, 32, 32, 3), np.uint8)
        form = form_for("tensorrt" if config.runtime == "tensorrt" else "onnxruntime", config.weight_bits)
        target = Path(config.target_onnx) if config.target_onnx is not None else None
        with tempfile.TemporaryDirectory(prefix="edgeloop-latency-") as tmp, SideBySide(settings, Path(tmp)) as timing:
            meter = RuntimeMeter(space, timing, ctx.meta(), images, form, config.target_ms, target, config.confirm_runs,
                                 config.target_speedup)  # fmt: skip
            result = search(space, meter, config.max_iterations)
        ctx.model = space.build(result.arch)
        log.info("prune_latency: %s -> %s, %.1f ms against a target of %.1f ms (%s %s, batch %d)",
                 space.short(space.start()), space.short(result.arch), result.ms, result.target_ms,
                 config.runtime, config.precision, config.batch)  # fmt: skip
        return {
            "criterion": config.criterion,
            "round_to": config.round_to,
            "measured_on": {
                **runtime,
                "precision": config.precision,
                "batch": config.batch,
                "threads": config.threads,
                "machine": sysinfo.machine(),
            },
            "target": config.target_onnx or f"{config.target_ms} ms",
            "target_speedup": config.target_speedup,
            "target_ms": round(result.target_ms, 3),
            "measured_ms": round(result.ms, 3),
            **_shape_record(space, result, before, ctx.model),
            "search": {
                "iterations": result.trace_dicts(),
                "candidates_built": meter.built,
                "build_s": round(meter.build_s, 1),
                "timing_s": round(meter.timing_s, 1),
                "runs": config.runs,
                "confirm_runs": config.confirm_runs,
            },
        }


def _widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _shape_record(
    space: ResNetSpace, result: SearchResult[Arch], before: nn.Module, after: nn.Module
) -> dict[str, Any]:
    """Stages, blocks, MACs, params and channels before and after (a removed layer shows as 0)."""
    start, old, new = space.start(), _widths(before), _widths(after)
    renamed = {n: space.renamed(result.arch, n) for n in old}
    channels = {n: [w, 0 if (r := renamed[n]) is None else new[r]] for n, w in old.items()}
    stages = space.describe(result.arch)
    for stage, orig in zip(stages, space.describe(start), strict=True):
        stage["width_kept"] = round(stage["width"] / orig["width"], 3)
    return {
        "stages_before": space.describe(start),
        "stages": stages,
        "moves": [it.chosen for it in result.trace if it.chosen],
        "macs_before": space.macs(start),
        "macs_after": space.macs(result.arch),
        "params_before": count_params(before),
        "params_after": count_params(after),
        "channels": channels,
    }
