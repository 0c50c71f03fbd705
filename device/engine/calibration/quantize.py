"""INT8 post-training quantization to explicit Q/DQ ONNX with ONNX Runtime's ``quantize_static``.

Torch-free: the host's ``ptq`` compression step and the device's ``edgeloop-agent calibrate`` /
``recalibrate`` both use it, with the ``forms.QdqForm`` their target needs. The calibration images
are uint8 RGB at the model's input size; ``shared.imaging`` makes them the model's input.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from device.engine.calibration.forms import QdqForm
from shared import imaging
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.modelmeta import ModelMeta, get_meta, set_meta

log = logging.getLogger(__name__)

Method = Literal["minmax", "entropy", "percentile"]
METHODS: tuple[Method, ...] = ("minmax", "entropy", "percentile")


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


def edge_nodes(model: Any) -> list[str]:
    """Names of the first Conv and the last Gemm/MatMul (candidates to keep in float)."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    fcs = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return ([convs[0]] if convs else []) + ([fcs[-1]] if fcs else [])


def quantize(
    fp32_onnx: Path,
    out: Path,
    calib_images: npt.NDArray[np.uint8],
    form: QdqForm,
    runtime: str,
    method: Method = "percentile",
    percentile: float = 99.999,
    keep_float: Sequence[str] = (),
    calibration: str = "ptq",
) -> dict[str, Any]:
    """Write an INT8 Q/DQ ONNX of ``fp32_onnx`` in ``form``, tagged for ``runtime``; returns a record
    with the calibrated activation ranges."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calib_images) == 0:
        raise EdgeloopError("calibration needs at least one image")
    if method not in METHODS:
        raise EdgeloopError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    src = onnx.load(str(fp32_onnx))
    meta = get_meta(src, str(fp32_onnx))
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference + graph clean-up first, as ONNX Runtime recommends before quantizing
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print() their settings
            quantize_static(
                str(pre),
                str(out),
                _calibration_reader(calib_images, meta.preprocessing, src.graph.input[0].name),
                quant_format=QuantFormat.QDQ,
                per_channel=form.per_channel,
                reduce_range=form.weight_bits == 7,
                activation_type=QuantType.QInt8 if form.activations == "s8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=_calibration_method(method),
                nodes_to_exclude=list(keep_float),
                extra_options=_quantizer_options(form, method, percentile),
            )
    tags = {"runtime": runtime, "calibration": calibration, "calibration_method": method,
            "calibration_images": str(len(calib_images)), "qdq_form": form.name}  # fmt: skip
    ranges = activation_ranges(_tag_int8(out, meta, tags))
    log.info("INT8 %s (%s, %s, %d images): %d activation tensors quantized, %d nodes kept float",
             runtime, form.name, method, len(calib_images), len(ranges), len(keep_float))  # fmt: skip
    return {
        "form": form.describe(),
        "method": method,
        "calibration_images": len(calib_images),
        "kept_float": list(keep_float),
        "ranges": {k: [round(a, 5), round(b, 5)] for k, (a, b) in ranges.items()},
    }


def _tag_int8(out: Path, meta: ModelMeta, tags: dict[str, str]) -> Any:
    """Record in ``out`` that it is INT8, for which runtime and how it was calibrated; check and return it."""
    import onnx

    q = onnx.load(str(out))
    set_meta(q, ModelMeta(meta.classes, meta.preprocessing, meta.arch, "int8", {**meta.extra, **tags}))
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


def _quantizer_options(form: QdqForm, method: Method, percentile: float) -> dict[str, Any]:
    """``quantize_static``'s extra options: the form's symmetry and bias, and the percentile."""
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": form.symmetric_activations}
    if not form.quantize_bias:
        extra["QuantizeBias"] = False  # TensorRT takes float biases and quantizes them itself
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    return extra


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


def moved_ranges(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], top: int = 5
) -> list[dict[str, float | str]]:
    """The activation ranges that changed most (relative width change) between two calibrations."""
    changes: list[tuple[float, str, float, float]] = []
    for name in before.keys() & after.keys():
        (a0, b0), (a1, b1) = before[name], after[name]
        width0, width1 = b0 - a0, b1 - a1
        changes.append(((width1 - width0) / width0 if width0 > 0 else 0.0, name, width0, width1))
    changes.sort(key=lambda c: -abs(c[0]))
    return [
        {"tensor": name, "before": round(w0, 5), "after": round(w1, 5), "change": round(c, 4)}
        for c, name, w0, w1 in changes[:top]
    ]


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
