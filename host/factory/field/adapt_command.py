"""``edgeloop adapt CHECKPOINT --field-samples DIR --data TRAIN --out OUT.onnx``: a model for a field.

Reads the unlabelled field samples and the labelled clean training set, estimates the field's
degradation, fine-tunes (``adapt.adapt_model``), and writes the adapted FP32 ONNX (BatchNorm folded,
verified against PyTorch by ``export.export_verified``) with its checkpoint beside it (``OUT.pt``).
``edgeloop-agent calibrate OUT.onnx`` then makes its INT8 form on the device.

The report says what was estimated, how long each part took, and the clean top-1 before and after
(``--val-data``). AdaBN, the baseline adaptation has to beat, is measured beside it: on the clean set
too, and, given a labelled field set (``--field-val``), the field top-1 of the original, AdaBN and
the adapted model.

``method="adabn"`` is that baseline on its own: BatchNorm statistics re-estimated on the field samples
(mixed with the model's own, ``adabn_weight``), no training set, seconds instead of minutes; what the
demo's field act ships. It corrects a shift of brightness and contrast (a night shift), not lost detail.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from torch import nn
from tqdm import tqdm

from device.engine import sysinfo
from host.factory import checkpoint
from host.factory.checkpoint import Checkpoint
from host.factory.export import export_verified
from host.factory.field.adapt import Adapted, AdaptSettings, adapt_model
from host.factory.field.adapt_bn import adabn
from host.factory.field.adapt_data import load_field_samples
from host.factory.fold import fold_bn
from host.factory.predict import predict_torch, top1
from host.factory.train.data import load_split
from shared.datasets import LabelledImages
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta

log = logging.getLogger(__name__)

Method = Literal["finetune", "adabn"]
ADABN_WEIGHT = 0.5  # the field images' share of each BatchNorm statistic (the demo's; 0.5-0.7 did alike there)
FIELD_LIMIT = 5000  # the estimator's statistics are averages: more than this adds time, not precision


def _top1(model: nn.Module, data: LabelledImages | None, prep: Any) -> float | None:
    return None if data is None else round(top1(predict_torch(model, data.images, prep), data.labels), 5)


def _paths(out: Path) -> tuple[Path, Path]:
    if out.suffix.lower() != ".onnx":
        raise EdgeloopError(f"--out {out}: expected an .onnx file name (its checkpoint goes beside it as .pt)")
    return out, out.with_suffix(".pt")


def compare(
    original: nn.Module, adapted: nn.Module, field: npt.NDArray[np.uint8], prep: Any,
    val: LabelledImages | None, field_val: LabelledImages | None,
) -> dict[str, Any]:  # fmt: skip
    """Clean and field top-1 of the original, AdaBN on ``field``, and the adapted model."""
    bn = adabn(original, field, prep)
    models = {"before": original, "adabn": bn, "after": adapted}
    out: dict[str, Any] = {}
    for name, data in (("clean", val), ("field", field_val)):
        if data is not None:
            out[name] = {"n_images": len(data), **{k: _top1(m, data, prep) for k, m in models.items()}}
    return out


def write(adapted: Adapted, ckpt: Checkpoint, source: Path, out: Path, parity_data: str | None) -> dict[str, Any]:
    """The verified, BN-folded ONNX and the checkpoint beside it; what the export measured."""
    onnx_path, pt_path = _paths(out)
    extra = {
        "source": source.name,
        "bn_folded": "true",
        "adapted": "true",
        "field_degradation": str(adapted.estimate.degradation.to_dict()),
    }
    meta = ModelMeta(ckpt.classes, ckpt.preprocessing, ckpt.arch, "fp32", extra)
    parity = export_verified(fold_bn(adapted.model), onnx_path, meta, reference=adapted.model, data=parity_data)
    metrics = {"adapted_from": str(source), "field_degradation": adapted.estimate.degradation.to_dict()}
    checkpoint.save(checkpoint.from_model(adapted.model, ckpt.arch, ckpt.classes, ckpt.preprocessing, metrics), pt_path)
    check = {"n_images": parity.n_images, "max_abs_diff": parity.max_abs_diff, "top1_agreement": parity.top1_agreement}
    return {"onnx": str(onnx_path), "checkpoint": str(pt_path), "parity": check}


def adabn_command(
    checkpoint_path: Path,
    field_dir: Path,
    out: Path,
    weight: float = ADABN_WEIGHT,
    val_data: str | None = None,
    field_val: str | None = None,
) -> dict[str, Any]:
    """AdaBN of the checkpoint on the field samples: the verified, BN-folded ONNX and its checkpoint."""
    t0 = time.perf_counter()
    onnx_path, pt_path = _paths(out)
    ckpt = checkpoint.load(checkpoint_path)
    model, prep = ckpt.build(), ckpt.preprocessing
    with tqdm(desc="read field samples", unit="img", disable=None) as bar:
        field = load_field_samples(field_dir, prep.size, limit=FIELD_LIMIT, progress=bar.update)
    val = load_split(val_data, ckpt.classes, "val", size=prep.size) if val_data else None
    fval = load_split(field_val, ckpt.classes, "field val", size=prep.size) if field_val else None
    t_load = time.perf_counter() - t0
    adapted = adabn(model, field, prep, weight=weight)
    t1 = time.perf_counter()
    how = f"adabn {weight} on {len(field)} images"
    extra = {"source": checkpoint_path.name, "bn_folded": "true", "adapted": how}
    meta = ModelMeta(ckpt.classes, prep, ckpt.arch, "fp32", extra)
    parity = export_verified(fold_bn(adapted), onnx_path, meta, reference=adapted, data=val_data)
    metrics = {"adapted_from": str(checkpoint_path), "adabn_weight": weight, "field_images": len(field)}
    checkpoint.save(checkpoint.from_model(adapted, ckpt.arch, ckpt.classes, prep, metrics), pt_path)
    t2 = time.perf_counter()
    accuracy: dict[str, Any] = {}
    for name, labelled in (("clean", val), ("field", fval)):
        if labelled is not None:
            before, after = _top1(model, labelled, prep), _top1(adapted, labelled, prep)
            accuracy[name] = {"n_images": len(labelled), "before": before, "adabn": after, "after": after}
    check = {"n_images": parity.n_images, "max_abs_diff": parity.max_abs_diff, "top1_agreement": parity.top1_agreement}
    return {
        "method": "adabn",
        "source": str(checkpoint_path),
        "field_samples": {"dir": str(field_dir), "n_images": len(field)},
        "adabn_weight": weight,
        "accuracy": accuracy,
        "onnx": str(onnx_path),
        "checkpoint": str(pt_path),
        "parity": check,
        "seconds": {
            "load_s": round(t_load, 2),
            "adabn_s": round(t1 - t_load - t0, 2),
            "export_s": round(t2 - t1, 2),
            "total_s": round(time.perf_counter() - t0, 2),
        },
        "machine": sysinfo.machine(),
    }


def adapt_command(
    checkpoint_path: Path,
    field_dir: Path,
    data: str,
    out: Path,
    settings: AdaptSettings,
    val_data: str | None = None,
    field_val: str | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    _paths(out)
    ckpt = checkpoint.load(checkpoint_path)
    model, prep = ckpt.build(), ckpt.preprocessing
    with tqdm(desc="read field samples", unit="img", disable=None) as bar:
        field = load_field_samples(field_dir, prep.size, limit=FIELD_LIMIT, progress=bar.update)
    train = load_split(data, ckpt.classes, "train", size=prep.size)
    val = load_split(val_data, ckpt.classes, "val", size=prep.size) if val_data else None
    fval = load_split(field_val, ckpt.classes, "field val", size=prep.size) if field_val else None
    t_load = time.perf_counter() - t0
    adapted = adapt_model(model, field, train, prep, settings)
    t1 = time.perf_counter()
    files = write(adapted, ckpt, checkpoint_path, out, val_data)
    t2 = time.perf_counter()
    accuracy = compare(model, adapted.model, field, prep, val, fval)
    seconds = {"load_s": round(t_load, 2), **adapted.seconds, "export_s": round(t2 - t1, 2)}
    seconds["total_s"] = round(time.perf_counter() - t0, 2)
    return {
        "method": "finetune",
        "checkpoint": str(checkpoint_path),
        "field_samples": {"dir": str(field_dir), "n_images": len(field)},
        "train": {"data": data, "n_images": len(train)},
        "estimate": adapted.estimate.to_dict(),
        "settings": settings.model_dump(),
        "accuracy": accuracy,
        **files,
        "history": adapted.history,
        "seconds": seconds,
        "machine": sysinfo.machine(),
    }
