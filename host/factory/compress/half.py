"""FP16 export of an FP32 ONNX: FP16 weights and compute, FP32 inputs and outputs (for TensorRT).

INT8 lives on the device side (``device.engine.calibration``): the ``ptq`` step and the device's own
``calibrate`` share one torch-free quantizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.modelmeta import ModelMeta, get_meta, set_meta


def _toposort(model: Any) -> Any:
    """The float16 converter appends its input Casts at the end of the node list; ONNX requires
    topological order (TensorRT's parser checks it), so re-sort with onnx-ir's pass."""
    import onnx_ir as ir
    import onnx_ir.passes.common as ir_passes

    m = ir.from_proto(model)
    ir_passes.TopologicalSortPass()(m)
    return ir.to_proto(m)


def export_fp16(fp32_onnx: Path, out: Path) -> dict[str, Any]:
    """FP16 weights and compute, FP32 inputs/outputs (ONNX Runtime's float16 converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = onnx.load(str(fp32_onnx))
    meta = get_meta(src, str(fp32_onnx))
    half = _toposort(convert_float_to_float16(src, keep_io_types=True))
    set_meta(half, ModelMeta(meta.classes, meta.preprocessing, meta.arch, "fp16", {**meta.extra, "runtime": "any"}))
    onnx.checker.check_model(half)
    onnx.save(half, str(out))
    return {"fp16": True, "io": "fp32"}
