"""Accuracy of a checkpoint or ONNX file on a labelled image set (torch side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from shared import imaging
from shared.imaging import Preprocessing


def to_input(images_u8: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (channels-last memory), same constants as shared.imaging."""
    scale, shift = imaging.affine(prep)
    x = images_u8.float() * torch.from_numpy(scale) - torch.from_numpy(shift)
    return x.permute(0, 3, 1, 2)


@torch.no_grad()
def predict_torch(
    model: nn.Module, images_u8: npt.NDArray[np.uint8], prep: Preprocessing, batch_size: int = 500
) -> npt.NDArray[np.float32]:
    """Logits for every image, eval mode, FP32."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images_u8), batch_size):
            x = to_input(torch.from_numpy(images_u8[i : i + batch_size]), prep)
            out.append(model(x).float().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def top1(logits: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    if len(labels) == 0:
        return 0.0
    return float((logits.argmax(1) == labels).mean())


def _ort_runtime(threads: int = 0):  # type: ignore[no-untyped-def]
    from device.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime

    return OnnxRuntimeRuntime(OnnxRuntimeConfig(intra_op_threads=threads))


def speed_onnx(
    onnx_path: Path,
    precision: str = "fp32",
    threads: int = 0,
    iterations: int = 200,
    throughput_batch: int = 256,
    min_seconds: float = 2.0,
) -> dict[str, Any]:
    """Latency at batch 1 and throughput at ``throughput_batch`` on ONNX Runtime's CPU provider."""
    import tempfile

    from device import bench

    with _ort_runtime(threads) as rt, tempfile.TemporaryDirectory() as tmp:
        rt.load(rt.build(onnx_path, precision, Path(tmp)))
        lat = bench.measure_latency(rt, batch=1, warmup=20, iterations=iterations)
        thr = bench.measure_throughput(rt, batch=throughput_batch, min_seconds=min_seconds)
        return {
            "latency_ms": lat.latency_ms,
            "throughput_ips": thr.ips,
            "throughput_batch": thr.batch,
            "runtime": f"onnxruntime {rt.version()} ({rt.providers[0]})",
        }


def evaluate_command(
    model_path: Path, data: str, limit: int | None = None, threads: int = 0, iterations: int = 200
) -> dict[str, Any]:
    """``edgeloop evaluate``: accuracy (top-1, per class), size, compute and CPU speed of a model."""
    import tempfile
    import time

    from tqdm import tqdm

    from device import bench
    from host.factory import checkpoint
    from host.factory.onnx_stats import onnx_params_macs
    from shared import datasets
    from shared.errors import EdgeloopError
    from shared.modelmeta import read_meta

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
            from host.factory.compress.fold import fold_bn
            from host.factory.export import export_verified
            from host.factory.stats import count_macs, count_params
            from shared.modelmeta import ModelMeta

            ckpt = checkpoint.load(model_path)
            model = ckpt.build()
            classes, prep = ckpt.classes, ckpt.preprocessing
            labels = datasets.label_indices(samples, classes)
            with tqdm(total=len(samples), desc="decode", unit="img", disable=None) as bar:
                images = datasets.decode_all(samples, size=prep.size, progress=bar.update)
            logits = predict_torch(model, images, prep)
            preds = logits.argmax(1)
            result.update(params=count_params(model), macs=count_macs(model, prep.size), runtime_eval="pytorch")
            onnx_path = Path(tmp) / "model.onnx"
            meta = ModelMeta(classes, prep, ckpt.arch)
            export_verified(fold_bn(model), onnx_path, meta, reference=model)
            precision = "fp32"
        else:
            import onnx

            meta = read_meta(model_path)
            classes, prep, precision = meta.classes, meta.preprocessing, meta.precision
            labels = datasets.label_indices(samples, classes)
            params, macs = onnx_params_macs(onnx.load(str(model_path)))
            result.update(params=params, macs=macs, runtime_eval="onnxruntime")
            with (
                _ort_runtime(threads) as rt,
                tqdm(total=len(samples), desc="evaluate", unit="img", disable=None) as bar,
            ):
                rt.load(rt.build(model_path, precision, Path(tmp)))
                ev = bench.evaluate(rt, samples, classes, prep, batch=256, progress=bar.update)
            preds = ev.predictions if ev.predictions is not None else np.zeros(0, dtype=np.int64)
            onnx_path = model_path
        per_class = {c: float((preds[labels == i] == i).mean()) for i, c in enumerate(classes) if (labels == i).any()}
        result.update(
            top1=float((preds == labels).mean()) if len(labels) else 0.0,
            n_images=len(labels),
            per_class=per_class,
            precision=precision,
        )
        result.update(speed_onnx(onnx_path, precision, threads, iterations))
    result["wall_time_s"] = round(time.perf_counter() - t0, 2)
    return result
