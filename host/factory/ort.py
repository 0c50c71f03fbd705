"""The device's own runtimes on the host CPU: host evaluation is device inference.

Export (the parity check, always ONNX Runtime), evaluate and report all open ONNX files with the engine's
``open_onnx``, so they run them exactly as a device running that runtime does. ``evaluate --runtime`` and ``report
--runtime`` name any registered backend (``onnxruntime``, ``openvino``, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.engine.runtimes import registry
from device.engine.runtimes.base import Runtime
from shared import imaging
from shared.imaging import Preprocessing

DEFAULT_RUNTIME = "onnxruntime"


def installed_runtimes() -> list[str]:
    """The registered backends that can run here, in ``auto``'s order (e.g. openvino, onnxruntime)."""
    return [name for name in registry.names() if registry.runtime_class(name).probe() is None]


def describe(rt: Runtime) -> str:
    """``onnxruntime 1.32.0 (CPUExecutionProvider)``, ``openvino 2026.4.1-... (cpu:AMD EPYC (avx2))``."""
    providers = getattr(rt, "providers", None)
    where = providers[0] if providers else rt.accelerator()
    return f"{rt.name} {rt.version()} ({where})"


def ort_logits(
    path: Path, images_u8: npt.NDArray[np.uint8], prep: Preprocessing, batch: int = 256
) -> npt.NDArray[np.float32]:
    """Logits of an FP32 ONNX file for every image (ONNX Runtime, the reference the export is checked against)."""
    with registry.open_onnx(DEFAULT_RUNTIME, path, "fp32") as rt:
        out = [rt.infer(imaging.normalize(images_u8[i : i + batch], prep)) for i in range(0, len(images_u8), batch)]
    return np.concatenate(out)
