"""The demo's adaptation: the running model adapted to a device's pulled field images, as a signed release.

Demo-sized: AdaBN (``host.factory.field.adapt_bn``), which needs no labels and takes seconds, rather than
``edgeloop adapt``'s fine-tune, which needs the labelled training set (not shipped; the demo is offline).
The field images are read as ``edgeloop adapt`` reads them (``load_field_samples``); half of each
BatchNorm statistic is theirs, half the model's own (``WEIGHT``), because the sample is small (a few
hundred images of a hundred scenes) and mixes the device's day-time traffic with its night. The release
holds the FP32 file (BN folded, verified against PyTorch) and its INT8 form calibrated on the same field
images. Torch is imported here, when the field act runs, not when the demo starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from host.fleet.release import ReleaseStore, create_release
from shared.protocol import ReleaseManifest

log = logging.getLogger(__name__)

WEIGHT = 0.5  # the field images' share of each BatchNorm statistic: an even split, not tuned (0.5-0.7 did alike)


@dataclass(frozen=True)
class Adaptation:
    release: ReleaseManifest
    n_images: int
    seconds: float


def next_version(store: ReleaseStore, name: str, first: str = "1.2.0") -> str:
    """``first``, or the next free patch version after it (a work directory used again keeps its releases)."""
    major, minor, patch = (int(p) for p in first.split("."))
    taken = set(store.versions(name))
    while f"{major}.{minor}.{patch}" in taken:
        patch += 1
    return f"{major}.{minor}.{patch}"


@contextlib.contextmanager
def _torch_logs_to_root() -> Iterator[None]:
    """torch's loggers write to stderr through handlers of their own and do not propagate; meanwhile their
    records go where every other library's do (the demo's log file, or the terminal under ``-v``)."""
    own = [
        lg
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and name.split(".")[0] == "torch" and lg.handlers
    ]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in own]
    for lg in own:
        lg.handlers, lg.propagate = [], True
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate


def adapt_release(
    checkpoint_path: Path,
    field_dir: Path,
    out: Path,
    store: ReleaseStore,
    name: str,
    version: str,
    sign_key: Path,
    source_top1: float,
    device: str,
) -> Adaptation:
    """AdaBN of ``checkpoint_path`` on the images under ``field_dir``: FP32 + INT8 under ``out``, released
    as ``name@version``."""
    from device.engine.calibration import forms
    from device.engine.calibration.quantize import quantize
    from host.factory import checkpoint
    from host.factory.export import export_verified
    from host.factory.field.adapt_bn import adabn
    from host.factory.field.adapt_data import load_field_samples
    from host.factory.fold import fold_bn
    from shared.modelmeta import ModelMeta

    t0 = time.perf_counter()
    ckpt = checkpoint.load(checkpoint_path)
    prep = ckpt.preprocessing
    field = load_field_samples(field_dir, prep.size)
    # in an order of their own: they arrive in an order the device draws at random, and INT8 calibration
    # depends on the order a little (its histograms), so the same images would not make the same release
    field = field[sorted(range(len(field)), key=lambda i: hashlib.sha256(field[i].tobytes()).digest())]
    # one batch: the exact statistics of all of them
    adapted = adabn(ckpt.build(), field, prep, batch=len(field), weight=WEIGHT)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{checkpoint_path.stem}-{device}"
    fp32, int8 = out / f"{stem}.onnx", out / f"{stem}-int8.onnx"
    extra = {"source": checkpoint_path.name, "bn_folded": "true", "adapted": f"adabn {WEIGHT} on {len(field)} images"}
    meta = ModelMeta(ckpt.classes, prep, ckpt.arch, "fp32", extra)
    with _torch_logs_to_root():
        parity = export_verified(fold_bn(adapted), fp32, meta, reference=adapted)
    log.info("adapted %s: %s", fp32.name, parity)
    quantize(fp32, int8, field, forms.U8S7, "onnxruntime")  # the zoo INT8 files' form, on the field images
    metrics = {"adapted_from": checkpoint_path.name, "adabn_weight": WEIGHT, "field_images": len(field)}
    checkpoint.save(checkpoint.from_model(adapted, ckpt.arch, ckpt.classes, prep, metrics), out / f"{stem}.pt")
    (out / f"{stem}.json").write_text(json.dumps({"name": stem, "arch": ckpt.arch, **metrics}, indent=2) + "\n")
    release = create_release(
        out,
        name,
        version,
        store,
        sign_key=sign_key,
        include=[fp32.name, int8.name],
        source_top1=source_top1,
        notes=f"{checkpoint_path.stem} adapted to {device}'s field: AdaBN on {len(field)} of its images",
    )
    return Adaptation(release, len(field), time.perf_counter() - t0)
