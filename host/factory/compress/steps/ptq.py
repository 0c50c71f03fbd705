"""``ptq``: INT8 post-training quantization of the exported FP32 ONNX, one file per runtime flavour."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from host.factory.compress import quantize
from host.factory.compress.context import Context
from host.factory.compress.quantize import Flavour, Method
from host.factory.compress.steps.base import CompressionStep, StepConfig, register_step
from shared.errors import EdgeloopError


def _both_flavours() -> list[Flavour]:
    return ["onnxruntime", "tensorrt"]


class PTQConfig(StepConfig):
    """INT8 post-training quantization of the exported ONNX: <name>-int8.onnx (ORT) / -int8-trt.onnx."""

    type: Literal["ptq"] = Field(description="INT8 post-training quantization")
    method: Method = Field("percentile", description="how activation ranges are calibrated")
    percentile: float = Field(99.999, gt=90, le=100, description="range percentile (method 'percentile')")
    calibration_images: int = Field(1024, ge=1, le=50000, description="class-balanced training images")
    flavours: list[Flavour] = Field(
        default_factory=_both_flavours, min_length=1, description="which runtimes' Q/DQ forms to write"
    )
    keep_edges_float: bool = Field(False, description="keep the first conv and the classifier in float")


@register_step
class PTQStep(CompressionStep[PTQConfig]):
    config = PTQConfig
    needs_fp32_onnx = True

    def run(self, ctx: Context, config: PTQConfig) -> dict[str, Any]:
        if ctx.onnx_fp32 is None:
            raise EdgeloopError("ptq needs an exported FP32 ONNX (add an 'export' step before it)")
        images = ctx.calibration_images(config.calibration_images)
        records: dict[str, Any] = {}
        for flavour in config.flavours:
            out = ctx.out / (f"{ctx.name}-int8.onnx" if flavour == "onnxruntime" else f"{ctx.name}-int8-trt.onnx")
            rec = quantize.quantize_ptq(
                ctx.onnx_fp32,
                out,
                images,
                flavour,
                config.method,
                config.percentile,
                keep_edges_float=config.keep_edges_float,
            )
            ctx.outputs.append(out.name)
            records[flavour] = {"file": out.name, **{k: v for k, v in rec.items() if k != "ranges"}}
            (ctx.out / f"{out.stem}.ranges.json").write_text(json.dumps(rec["ranges"], indent=1))
        return records
