"""Checkpoint -> verified ONNX: opset >= 17, dynamic batch, input ``input``, output ``logits``.

The file is written only after ``onnx.checker`` passes and ONNX Runtime agrees with PyTorch on
real images (max abs logit difference and top-1 agreement); otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from device.engine import reference as drift_reference
from host.factory import checkpoint
from host.factory.fold import fold_bn
from host.factory.ort import ort_logits
from host.factory.predict import predict_torch
from shared import datasets
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.modelmeta import ModelMeta, set_meta
from shared.samples import golden_dir

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class Parity:
    n_images: int
    max_abs_diff: float
    top1_agreement: float

    def ok(self, atol: float, min_agreement: float) -> bool:
        return self.max_abs_diff <= atol and self.top1_agreement >= min_agreement

    def __str__(self) -> str:
        return (
            f"parity on {self.n_images} images: max |logit diff| = {self.max_abs_diff:.3g}, "
            f"top-1 agreement = {100 * self.top1_agreement:.2f}%"
        )


def onnx_from_torch(
    model: nn.Module, path: Path, input_size: int = 32, opset: int = DEFAULT_OPSET, dynamo: bool = True
) -> None:
    """Export with torch's ONNX exporter, batch dimension dynamic.

    The dynamo-based exporter is the default. ``dynamo=False`` selects the TorchScript exporter,
    which QAT needs: torch.export cannot trace fake-quantize ops (no fake-tensor kernel for
    ``fake_quantize_per_tensor_affine_cachemask``), while the TorchScript exporter maps them to
    QuantizeLinear/DequantizeLinear.
    """
    if opset < 17:
        raise EdgeloopError(f"opset {opset} is too old; edgeloop exports opset >= 17")
    model = model.eval()
    example = (torch.zeros(2, 3, input_size, input_size),)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(
                model, example, str(path), dynamo=True, dynamic_shapes=({0: batch},), external_data=False, **names
            )
        else:
            torch.onnx.export(
                model,
                example,
                str(path),
                dynamo=False,
                do_constant_folding=True,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                **names,
            )


def finalize_onnx(path: Path, meta: ModelMeta) -> Any:
    """Add edgeloop metadata, run the full ONNX checker, and return the ModelProto."""
    import onnx

    model = onnx.load(str(path))
    set_meta(model, meta)
    model.producer_name = "edgeloop"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise EdgeloopError(f"exported model fails onnx.checker: {e}") from e
    onnx.save(model, str(path))
    return model


def check_parity(model: nn.Module, onnx_path: Path, images_u8: npt.NDArray[np.uint8], prep: Preprocessing) -> Parity:
    ref = predict_torch(model, images_u8, prep)
    got = ort_logits(onnx_path, images_u8, prep)
    return Parity(
        n_images=len(images_u8),
        max_abs_diff=float(np.abs(ref - got).max()) if len(ref) else 0.0,
        top1_agreement=float((ref.argmax(1) == got.argmax(1)).mean()) if len(ref) else 1.0,
    )


def parity_images(data: str | None, limit: int = 1000) -> npt.NDArray[np.uint8]:
    """Real images for the parity check: ``data`` if given, else the bundled golden set."""
    spec = data or str(golden_dir())
    return datasets.load_labelled(spec, limit=limit).images


def export_verified(
    model: nn.Module,
    out: Path,
    meta: ModelMeta,
    reference: nn.Module | None = None,
    data: str | None = None,
    atol: float = 1e-3,
    min_agreement: float = 0.999,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    parity_limit: int = 1000,
) -> Parity:
    """Export ``model`` and keep the file only if it matches ``reference`` (default: ``model``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx_from_torch(model, tmp, meta.preprocessing.size, opset, dynamo)
        finalize_onnx(tmp, meta)
        parity = check_parity(
            reference if reference is not None else model, tmp, parity_images(data, parity_limit), meta.preprocessing
        )
        log.info("%s", parity)
        if not parity.ok(atol, min_agreement):
            raise EdgeloopError(
                f"refusing to write {out}: ONNX Runtime disagrees with PyTorch ({parity}; "
                f"limits: max diff <= {atol}, agreement >= {100 * min_agreement:.1f}%)"
            )
        # the drift reference (held-out golden images), so a served file can tell when its input moves
        drift_reference.stamp(tmp, drift_reference.reference_of(tmp))
        tmp.chmod(0o644)  # mkstemp makes 0600; a model file is meant to be served and shared
        tmp.replace(out)
        return parity
    finally:
        tmp.unlink(missing_ok=True)


def export_command(
    checkpoint_path: Path,
    out: Path,
    data: str | None = None,
    atol: float = 1e-3,
    opset: int = DEFAULT_OPSET,
    fold: bool = True,
    parity_limit: int = 1000,
) -> Parity:
    """``edgeloop export``: fold BN (default), export, check, and write only a verified file."""
    ckpt = checkpoint.load(checkpoint_path)
    model = ckpt.build()
    to_export = fold_bn(model) if fold else model
    meta = ModelMeta(
        ckpt.classes,
        ckpt.preprocessing,
        ckpt.arch,
        "fp32",
        {"source": checkpoint_path.name, "bn_folded": str(fold).lower()},
    )
    return export_verified(
        to_export, out, meta, reference=model, data=data, atol=atol, opset=opset, parity_limit=parity_limit
    )
