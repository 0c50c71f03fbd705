"""``fp16``: an FP16 copy of the exported FP32 ONNX, inputs and outputs kept FP32."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress import half
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, StepConfig, register_step
from shared.errors import EdgeloopError


class FP16Config(StepConfig):
    """FP16 ONNX with FP32 inputs/outputs: <name>-fp16.onnx."""

    type: Literal["fp16"] = Field(description="FP16 ONNX")


@register_step
class FP16Step(CompressionStep[FP16Config]):
    config = FP16Config
    needs_fp32_onnx = True

    def run(self, ctx: Context, config: FP16Config) -> dict[str, Any]:
        if ctx.onnx_fp32 is None:
            raise EdgeloopError("fp16 needs an exported FP32 ONNX (add an 'export' step before it)")
        out = ctx.out / f"{ctx.name}-fp16.onnx"
        rec = half.export_fp16(ctx.onnx_fp32, out)
        ctx.outputs.append(out.name)
        return {"file": out.name, **rec}
