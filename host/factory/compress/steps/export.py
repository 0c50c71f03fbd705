"""``export``: fold BatchNorm and write the verified FP32 ONNX, ``<name>.onnx``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, StepConfig, register_step
from host.factory.export import export_verified
from host.factory.fold import count_bn, fold_bn
from host.factory.layout import contiguous


class ExportConfig(StepConfig):
    """Fold BN and export the verified FP32 ONNX: <name>.onnx."""

    type: Literal["export"] = Field(description="verified FP32 ONNX export")
    atol: float = Field(1e-4, gt=0, description="max abs logit difference vs the unfolded model")


@register_step
class ExportStep(CompressionStep[ExportConfig]):
    config = ExportConfig
    exports_fp32_onnx = True

    def run(self, ctx: Context, config: ExportConfig) -> dict[str, Any]:
        import onnx

        model = contiguous(ctx.model).eval()
        folded = fold_bn(model)
        out = ctx.out / f"{ctx.name}.onnx"
        meta = ctx.meta(sparsity=ctx.sparsity, bn_folded="true")
        parity = export_verified(folded, out, meta, reference=model, atol=config.atol)
        ctx.onnx_fp32 = out
        ctx.outputs.append(out.name)
        bn_nodes = sum(n.op_type == "BatchNormalization" for n in onnx.load(str(out)).graph.node)
        return {
            "file": out.name,
            "bn_layers_folded": count_bn(model),
            "bn_nodes_in_onnx": bn_nodes,
            "parity_max_abs_diff": parity.max_abs_diff,
            "parity_top1_agreement": parity.top1_agreement,
        }
