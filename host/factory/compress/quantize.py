"""INT8 post-training quantization to explicit Q/DQ ONNX (ONNX Runtime's ``quantize_static``),
FP16 export, and the per-runtime Q/DQ flavours a release carries.

Two INT8 flavours of one model:

* ``tensorrt``: symmetric int8 activations (zero point 0) and per-channel symmetric int8 weights,
  the explicit-quantization form TensorRT 10 builds and TensorRT 11 requires.
* ``onnxruntime``: uint8 asymmetric activations + per-channel symmetric int8 weights (U8S8), which
  ONNX Runtime's x86 CPU kernels run fastest (S8S8 is measured ~2x slower there).

Both are calibrated on the same images with the same method; the device picks the one for its
runtime (``Artifact.runtime``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from shared import imaging
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.modelmeta import ModelMeta, get_meta, set_meta

log = logging.getLogger(__name__)

Flavour = Literal["onnxruntime", "tensorrt"]
Method = Literal["minmax", "entropy", "percentile"]


def _calibration_reader(images: npt.NDArray[np.uint8], prep: Preprocessing, input_name: str, batch: int = 32) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    # ORT's histogram calibrators (entropy, percentile) stack batches: they must all be one size
    if len(images) > batch:
        images = images[: len(images) // batch * batch]
    else:
        batch = len(images)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = self._batches()

        def _batches(self) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
            for i in range(0, len(images), batch):
                yield {input_name: imaging.normalize(images[i : i + batch], prep)}

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = self._batches()

    return Reader()


def _edge_nodes(model: Any) -> list[str]:
    """Names of the first Conv and the last Gemm/MatMul (candidates to keep in float)."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    fcs = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return ([convs[0]] if convs else []) + ([fcs[-1]] if fcs else [])


def quantize_ptq(
    fp32_onnx: Path,
    out: Path,
    calib_images: npt.NDArray[np.uint8],
    flavour: Flavour,
    method: Method = "percentile",
    percentile: float = 99.999,
    keep_float: Sequence[str] = (),
    keep_edges_float: bool = False,
) -> dict[str, Any]:
    """Write an INT8 Q/DQ ONNX of ``fp32_onnx``; returns a record incl. the calibrated ranges."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calib_images) == 0:
        raise EdgeloopError("calibration needs at least one image")
    src = onnx.load(str(fp32_onnx))
    meta = get_meta(src, str(fp32_onnx))
    input_name = src.graph.input[0].name
    exclude = list(keep_float) + (_edge_nodes(src) if keep_edges_float else [])
    symmetric_act = flavour == "tensorrt"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference + graph clean-up first, as ONNX Runtime recommends before quantizing
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            _calibration_reader(calib_images, meta.preprocessing, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric_act else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_calibration_method(method),
            nodes_to_exclude=exclude,
            extra_options=_quantizer_options(flavour, method, percentile),
        )
    ranges = activation_ranges(_tag_int8(out, meta, flavour, method, len(calib_images)))
    _log_ranges(ranges, flavour, method, len(calib_images), exclude)
    return {
        "flavour": flavour,
        "method": method,
        "calibration_images": len(calib_images),
        "kept_float": exclude,
        "ranges": {k: [round(a, 5), round(b, 5)] for k, (a, b) in ranges.items()},
    }


def _tag_int8(out: Path, meta: ModelMeta, flavour: Flavour, method: Method, n_images: int) -> Any:
    """Record in ``out`` that it is INT8 for ``flavour`` and how it was calibrated; check and return it."""
    import onnx

    q = onnx.load(str(out))
    extra_meta = {
        **meta.extra,
        "runtime": flavour,
        "calibration": "ptq",
        "calibration_method": method,
        "calibration_images": str(n_images),
    }
    set_meta(q, ModelMeta(meta.classes, meta.preprocessing, meta.arch, "int8", extra_meta))
    onnx.checker.check_model(q)
    onnx.save(q, str(out))
    return q


def _calibration_method(method: Method) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def _quantizer_options(flavour: Flavour, method: Method, percentile: float) -> dict[str, Any]:
    """``quantize_static``'s extra options: the symmetry of each flavour, and the percentile."""
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": flavour == "tensorrt"}
    if flavour == "tensorrt":
        extra["QuantizeBias"] = False  # TensorRT takes float biases and quantizes them itself
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    return extra


def _log_ranges(
    ranges: dict[str, tuple[float, float]], flavour: Flavour, method: Method, n_images: int, kept: list[str]
) -> None:
    for name, (lo, hi) in list(ranges.items())[:100]:
        log.debug("calibrated %s: [%.4f, %.4f]", name, lo, hi)
    log.info(
        "PTQ %s (%s, %d images): %d activation tensors quantized, %d nodes kept float%s",
        flavour,
        method,
        n_images,
        len(ranges),
        len(kept),
        f" ({', '.join(kept)})" if kept else "",
    )


def activation_ranges(model: Any) -> dict[str, tuple[float, float]]:
    """Real-valued range of every activation QuantizeLinear: scale * (qmin - zp, qmax - zp)."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out: dict[str, tuple[float, float]] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        scale = inits.get(n.input[1])
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        z = int(zp.item()) if zp is not None else 0
        lo, hi = (0, 255) if zp is not None and zp.dtype == np.uint8 else (-128, 127)
        out[n.input[0]] = (float(scale.item()) * (lo - z), float(scale.item()) * (hi - z))
    return out


def count_qdq(model: Any) -> dict[str, int]:
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


def qdq_is_symmetric_int8(model: Any) -> bool:
    """TensorRT's form: every Q/DQ zero point is int8 and 0."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zps = [
        inits[n.input[2]]
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits
    ]
    return bool(zps) and all(z.dtype == np.int8 and not z.any() for z in zps)


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
