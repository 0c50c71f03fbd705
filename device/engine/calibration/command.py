"""``edgeloop-agent calibrate FP32.onnx --calib-dir DIR --out INT8.onnx``: INT8 made for this machine.

It picks the Q/DQ form that this machine's runtime runs correctly and fastest (``forms.choose``:
TensorRT's on a GPU, on x86 one chosen from the CPU's ISA), checks the calibration set
(``calibset``), quantizes a seeded random part of it, and verifies the result against the FP32 model
on the held-out rest (agreement) and on a labelled set if one is given (accuracy drop).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from device.engine import sysinfo
from device.engine.calibration import calibset, forms
from device.engine.calibration.quantize import Method, quantize
from device.engine.calibration.verify import Verification, compare
from device.engine.runtimes import registry
from device.engine.runtimes.base import RuntimeConfig
from shared import datasets
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.modelmeta import read_meta


def verify_file(
    config: RuntimeConfig,
    int8: Path,
    fp32: Path,
    held_out: calibset.CalibrationSet,
    prep: Preprocessing,
    verify_dir: Path | None,
    max_drop: float,
    min_agreement: float,
) -> dict[str, Any]:
    """Build both files on the runtime and compare them (held-out field images; a labelled set)."""
    out: dict[str, Any] = {}
    with registry.open_onnx(config, int8, "int8") as cand, registry.open_onnx(config, fp32, "fp32") as ref:
        if len(held_out):
            out["held_out"] = compare(cand, ref, held_out.images, prep, None, max_drop, min_agreement).as_dict()
        if verify_dir is not None:
            labelled = datasets.load_labelled(verify_dir, size=prep.size)
            v: Verification = compare(cand, ref, labelled.images, prep, labelled.labels, max_drop, min_agreement)
            out["labelled"] = v.as_dict()
    out["passed"] = all(v["passed"] for v in out.values() if isinstance(v, dict))
    return out


def calibrate_command(
    fp32_onnx: Path,
    calib_dir: Path,
    out: Path,
    runtime: RuntimeConfig,
    method: Method = "percentile",
    n_images: int = 1024,
    verify_dir: Path | None = None,
    max_drop: float = 1.0,
    min_agreement: float = 0.97,
) -> dict[str, Any]:
    meta = read_meta(fp32_onnx)
    if meta.precision != "fp32":
        raise EdgeloopError(f"{fp32_onnx} is {meta.precision}; calibrate starts from the FP32 model")
    with registry.create(runtime) as probe:
        name, gpu, accelerator = probe.name, probe.uses_gpu(), probe.accelerator()
    choice = forms.choose(name, gpu)
    cal = calibset.load(calib_dir, meta.preprocessing.size)
    part, held = cal.split(n_images)
    t0 = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out.parent if out.parent.exists() else None)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        rec = quantize(fp32_onnx, tmp, part.images, choice.form, name, method, calibration="device")
        seconds = time.perf_counter() - t0
        check = verify_file(runtime, tmp, fp32_onnx, held, meta.preprocessing, verify_dir, max_drop, min_agreement)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "out": str(out),
        "form": rec["form"],
        "why": choice.reason,
        "runtime": name,
        "accelerator": accelerator,
        "machine": sysinfo.machine(),
        "method": method,
        "calibration_images": len(part),
        "held_out_images": len(held),
        "skipped_constant": len(cal.skipped_constant),
        "calibration_s": round(seconds, 3),
        "activation_tensors": len(rec["ranges"]),
        "verification": check,
    }
