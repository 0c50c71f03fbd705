"""ONNX Runtime on the host CPU, through the device's own runtime: host evaluation is device inference.

Export (the parity check), evaluate and report all open ONNX files here, so they run them exactly
as a device running ONNX Runtime does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from shared import imaging
from shared.imaging import Preprocessing


def open_onnx(onnx_path: Path, precision: str, cache: Path, threads: int = 0) -> OnnxRuntimeRuntime:
    """A loaded CPU session of ``onnx_path`` (built into ``cache``); close it, e.g. with ``with``."""
    rt = OnnxRuntimeRuntime(OnnxRuntimeConfig(intra_op_threads=threads))
    try:
        # the precision comes from the file's metadata as a plain str; ONNX Runtime runs the file as it is
        rt.load(rt.build(onnx_path, precision, cache))  # type: ignore[arg-type]
    except BaseException:
        rt.close()
        raise
    return rt


def ort_logits(
    path: Path, images_u8: npt.NDArray[np.uint8], prep: Preprocessing, batch: int = 256
) -> npt.NDArray[np.float32]:
    """Logits of an FP32 ONNX file for every image."""
    with tempfile.TemporaryDirectory() as tmp, open_onnx(path, "fp32", Path(tmp)) as rt:
        out = [rt.infer(imaging.normalize(images_u8[i : i + batch], prep)) for i in range(0, len(images_u8), batch)]
    return np.concatenate(out)
