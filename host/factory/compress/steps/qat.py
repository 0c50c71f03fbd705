"""``qat``: quantization-aware fine-tuning; writes the TensorRT Q/DQ ONNX and its exact ORT twin."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress import qat
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, TrainKnobs, register_step
from host.factory.export import export_verified
from host.factory.fold import fold_bn
from host.factory.layout import contiguous
from shared.modelmeta import set_meta


class QATConfig(TrainKnobs):
    """Quantization-aware fine-tuning: <name>-trt.onnx (TensorRT Q/DQ) and <name>.onnx (ORT U8S8 twin)."""

    type: Literal["qat"] = Field(description="quantization-aware fine-tuning")
    lr: float = Field(0.002, gt=0, description="peak learning rate (cosine decay)")
    calibration_images: int = Field(1024, ge=1, le=50000, description="images that set the initial ranges")


@register_step
class QATStep(CompressionStep[QATConfig]):
    config = QATConfig
    writes_own_onnx = True

    def run(self, ctx: Context, config: QATConfig) -> dict[str, Any]:
        import onnx

        base = fold_bn(contiguous(ctx.model).eval())
        qmodel, info = qat.prepare_qat(base, ctx.calibration_images(config.calibration_images), ctx.prep)
        ctx.fit(qmodel, config.train_config(ctx.seed, bf16=False), desc="QAT")
        qmodel.eval()
        qat.set_exporting(qmodel, True)
        out_trt = ctx.out / f"{ctx.name}-trt.onnx"
        meta = ctx.meta("int8", runtime="tensorrt", calibration="qat")
        parity = export_verified(qmodel, out_trt, meta, atol=0.1, min_agreement=0.99, dynamo=False)
        q = onnx.load(str(out_trt))
        changed = qat.to_u8_activations(q)
        set_meta(q, ctx.meta("int8", runtime="onnxruntime", calibration="qat"))
        out_ort = ctx.out / f"{ctx.name}.onnx"
        onnx.save(q, str(out_ort))
        ctx.outputs += [out_trt.name, out_ort.name]
        return {
            "files": [out_trt.name, out_ort.name],
            "fake_quant_top1": ctx.evaluate(qmodel),
            "learned_amax": qat.learned_ranges(qmodel),
            "initial_amax": info["initial_amax"],
            "u8_zero_points_rewritten": changed,
            "export_parity_max_abs_diff": parity.max_abs_diff,
        }
