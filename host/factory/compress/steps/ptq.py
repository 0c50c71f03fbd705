"""``ptq``: INT8 post-training quantization of the exported FP32 ONNX, one file per runtime flavour.

The quantizer is the device's (``device.engine.calibration.quantize``), so a release's INT8 files and a
device's re-calibrated ones come from one code path. ``weight_bits = 7`` (the default) makes files
that are right on every x86 CPU, AVX2 without VNNI included (see ``device.engine.calibration.forms``); a
device re-quantizes to its own best form with ``edgeloop-agent calibrate``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from device.engine.calibration import forms
from device.engine.calibration.quantize import Method, edge_nodes, quantize
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, StepConfig, register_step
from shared.errors import EdgeloopError

Flavour = Literal["onnxruntime", "tensorrt"]


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
    weight_bits: Literal[7, 8] = Field(
        7, description="7: right on every x86 CPU (AVX2 without VNNI too); 8: only with VNNI/AMX, ARM or a GPU"
    )
    keep_edges_float: bool = Field(False, description="keep the first conv and the classifier in float")


def form_for(flavour: Flavour, weight_bits: int) -> forms.QdqForm:
    if flavour == "tensorrt":
        return forms.TENSORRT if weight_bits == 8 else forms.S8S7
    return forms.U8S8 if weight_bits == 8 else forms.U8S7


@register_step
class PTQStep(CompressionStep[PTQConfig]):
    config = PTQConfig
    needs_fp32_onnx = True

    def run(self, ctx: Context, config: PTQConfig) -> dict[str, Any]:
        if ctx.onnx_fp32 is None:
            raise EdgeloopError("ptq needs an exported FP32 ONNX (add an 'export' step before it)")
        import onnx  # only to name the edge layers kept in float

        images = ctx.calibration_images(config.calibration_images)
        keep = edge_nodes(onnx.load(str(ctx.onnx_fp32))) if config.keep_edges_float else []
        records: dict[str, Any] = {}
        for flavour in config.flavours:
            out = ctx.out / (f"{ctx.name}-int8.onnx" if flavour == "onnxruntime" else f"{ctx.name}-int8-trt.onnx")
            form = form_for(flavour, config.weight_bits)
            rec = quantize(ctx.onnx_fp32, out, images, form, flavour, config.method, config.percentile, keep)
            ctx.outputs.append(out.name)
            records[flavour] = {"file": out.name, "flavour": flavour, **{k: v for k, v in rec.items() if k != "ranges"}}
            (ctx.out / f"{out.stem}.ranges.json").write_text(json.dumps(rec["ranges"], indent=1))
        return records
