"""The device's own runtimes on the host CPU: host evaluation is device inference.

Export (the parity check, always ONNX Runtime), evaluate and report all open ONNX files here, so they
run them exactly as a device running that runtime does. ``evaluate --runtime`` and ``report
--runtime`` name any registered backend (``onnxruntime``, ``openvino``, ...).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.runtimes import registry
from device.runtimes.base import Runtime, RuntimeConfig
from shared import imaging
from shared.imaging import Preprocessing

DEFAULT_RUNTIME = "onnxruntime"
# each backend's name for its thread count (the same flags `edgeloop-agent bench --threads` sets)
THREAD_FIELDS = ("intra_op_threads", "inference_num_threads")


def runtime_config(runtime: str, threads: int = 0) -> RuntimeConfig:
    """The ``[runtime]`` table of backend ``runtime`` with its thread count set (0: one per core)."""
    fields = registry.runtime_class(runtime).config_class.model_fields
    return registry.parse_config({"type": runtime, **{f: threads for f in THREAD_FIELDS if f in fields}})


def installed_runtimes() -> list[str]:
    """The registered backends that can run here, in ``auto``'s order (e.g. openvino, onnxruntime)."""
    return [name for name in registry.names() if registry.runtime_class(name).probe() is None]


def describe(rt: Runtime) -> str:
    """``onnxruntime 1.32.0 (CPUExecutionProvider)``, ``openvino 2026.4.1-... (cpu:AMD EPYC (avx2))``."""
    providers = getattr(rt, "providers", None)
    where = providers[0] if providers else rt.accelerator()
    return f"{rt.name} {rt.version()} ({where})"


def open_onnx(
    onnx_path: Path, precision: str, cache: Path, threads: int = 0, runtime: str = DEFAULT_RUNTIME
) -> Runtime:
    """A loaded engine of ``onnx_path`` on ``runtime`` (built into ``cache``); close it, e.g. with ``with``."""
    rt = registry.create(runtime_config(runtime, threads))
    try:
        # the precision comes from the file's metadata as a plain str; the backend checks it against the file
        rt.load(rt.build(onnx_path, precision, cache))  # type: ignore[arg-type]
    except BaseException:
        rt.close()
        raise
    return rt


def ort_logits(
    path: Path, images_u8: npt.NDArray[np.uint8], prep: Preprocessing, batch: int = 256
) -> npt.NDArray[np.float32]:
    """Logits of an FP32 ONNX file for every image (ONNX Runtime, the reference the export is checked against)."""
    with tempfile.TemporaryDirectory() as tmp, open_onnx(path, "fp32", Path(tmp)) as rt:
        out = [rt.infer(imaging.normalize(images_u8[i : i + batch], prep)) for i in range(0, len(images_u8), batch)]
    return np.concatenate(out)
