"""``edgeloop evaluate``: accuracy, size, compute and CPU speed of a checkpoint or ONNX file.

A checkpoint is evaluated in PyTorch and timed as its verified, BN-folded ONNX export; an ONNX
file is evaluated and timed on one of the device's runtimes (``--runtime``: ONNX Runtime's CPU
provider by default, ``openvino``, ...), exactly as a device running it would.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from device.engine import bench
from device.engine.runtimes import registry
from host.factory import checkpoint
from host.factory.export import export_verified
from host.factory.fold import fold_bn
from host.factory.onnx_stats import onnx_params_macs
from host.factory.ort import DEFAULT_RUNTIME, describe
from host.factory.predict import predict_torch
from host.factory.stats import count_macs, count_params
from shared import datasets
from shared.datasets import Sample
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta, read_meta

log = logging.getLogger(__name__)


def speed_onnx(
    onnx_path: Path,
    precision: str = "fp32",
    threads: int = 0,
    iterations: int = 200,
    throughput_batch: int = 256,
    min_seconds: float = 2.0,
    runtime: str = DEFAULT_RUNTIME,
) -> dict[str, Any]:
    """Latency at batch 1 and throughput at ``throughput_batch`` on ``runtime`` (ONNX Runtime's CPU provider)."""
    with registry.open_onnx(registry.runtime_config(runtime, threads), onnx_path, precision) as rt:
        lat = bench.measure_latency(rt, batch=1, warmup=20, iterations=iterations)
        thr = bench.measure_throughput(rt, batch=throughput_batch, min_seconds=min_seconds)
        return {
            "latency_ms": lat.latency_ms,
            "throughput_ips": thr.ips,
            "throughput_batch": thr.batch,
            "runtime": describe(rt),
            "runtime_name": rt.name,
            "accelerator": rt.accelerator(),
        }


def evaluate_command(
    model_path: Path,
    data: str,
    limit: int | None = None,
    threads: int = 0,
    iterations: int = 200,
    runtime: str = DEFAULT_RUNTIME,
) -> dict[str, Any]:
    """``edgeloop evaluate``: accuracy (top-1, per class), size, compute and CPU speed of a model."""
    t0 = time.perf_counter()
    suffix = model_path.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise EdgeloopError(f"{model_path}: expected a .pt checkpoint or an .onnx file")
    samples = datasets.list_samples(data)
    if limit:
        samples = datasets.balanced_subset(samples, limit)
    result: dict[str, Any] = {"model": str(model_path), "data": data}
    with tempfile.TemporaryDirectory() as tmp:
        if suffix == ".pt":
            onnx_path, classes, labels, preds = _checkpoint_predictions(model_path, samples, Path(tmp), result)
            precision = "fp32"
        else:
            onnx_path = model_path
            classes, labels, preds, precision = _onnx_predictions(
                model_path, samples, threads, Path(tmp), result, runtime
            )
        per_class = {c: float((preds[labels == i] == i).mean()) for i, c in enumerate(classes) if (labels == i).any()}
        result.update(
            top1=float((preds == labels).mean()) if len(labels) else 0.0,
            n_images=len(labels),
            per_class=per_class,
            precision=precision,
        )
        result.update(speed_onnx(onnx_path, precision, threads, iterations, runtime=runtime))
    result["wall_time_s"] = round(time.perf_counter() - t0, 2)
    return result


def _checkpoint_predictions(
    model_path: Path, samples: list[Sample], tmp: Path, result: dict[str, Any]
) -> tuple[Path, tuple[str, ...], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """PyTorch predictions of a checkpoint, plus its verified ONNX export (written to ``tmp``) to time."""
    ckpt = checkpoint.load(model_path)
    model = ckpt.build()
    classes, prep = ckpt.classes, ckpt.preprocessing
    labels = datasets.label_indices(samples, classes)
    with tqdm(total=len(samples), desc="decode", unit="img", disable=None) as bar:
        images = datasets.decode_all(samples, size=prep.size, progress=bar.update)
    preds = predict_torch(model, images, prep).argmax(1)
    result.update(params=count_params(model), macs=count_macs(model, prep.size), runtime_eval="pytorch")
    onnx_path = tmp / "model.onnx"
    export_verified(fold_bn(model), onnx_path, ModelMeta(classes, prep, ckpt.arch), reference=model)
    return onnx_path, classes, labels, preds


def _onnx_predictions(
    model_path: Path, samples: list[Sample], threads: int, tmp: Path, result: dict[str, Any], runtime: str
) -> tuple[tuple[str, ...], npt.NDArray[np.int64], npt.NDArray[np.int64], str]:
    """Predictions of an ONNX file on ``runtime``, with the classes and precision its metadata names."""
    import onnx

    meta = read_meta(model_path)
    classes, prep, precision = meta.classes, meta.preprocessing, meta.precision
    labels = datasets.label_indices(samples, classes)
    params, macs = onnx_params_macs(onnx.load(str(model_path)))
    result.update(params=params, macs=macs, runtime_eval=runtime)
    with (
        registry.open_onnx(registry.runtime_config(runtime, threads), model_path, precision, tmp) as rt,
        tqdm(total=len(samples), desc="evaluate", unit="img", disable=None) as bar,
    ):
        ev = bench.evaluate(rt, samples, classes, prep, batch=256, progress=bar.update)
    preds = ev.predictions if ev.predictions is not None else np.zeros(0, dtype=np.int64)
    if ev.unreadable:
        log.warning("%d of %d images could not be read and are not counted", ev.unreadable, len(samples))
    if ev.evaluated is not None:
        labels = labels[ev.evaluated]  # the predictions of the images that were read
    return classes, labels, preds, precision
