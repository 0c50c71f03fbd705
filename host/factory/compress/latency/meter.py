"""The latency of an architecture, measured: its pruned model exported, quantized for INT8, built and
timed on the named runtime, side by side with the target.

Each architecture is exported once (BN folded, with the TorchScript exporter: the same convolutions,
adds and ReLUs as the verified dynamo export in a tenth of the time; no parity check, only its speed
matters here), quantized
once in the runtime's Q/DQ form (calibration on a few dozen images: the ranges do not change the
time), and built once: the engines are cached by architecture, and only the timing is repeated.
The target is either a fixed figure or an ONNX file measured in the same rounds as the candidates (its
latency, or that divided by a speed-up: "1.4x as fast as resnet20-int8 on this runtime").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.engine.calibration.forms import QdqForm
from device.engine.calibration.quantize import quantize
from host.factory.compress.latency.search import Measurement
from host.factory.compress.latency.space import Arch, ResNetSpace
from host.factory.compress.latency.timing import SideBySide, median
from host.factory.export import finalize_onnx, onnx_from_torch
from host.factory.fold import fold_bn
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta

log = logging.getLogger(__name__)

TARGET = "target"  # the timing key of the target file


class RuntimeMeter:
    """``search.Meter`` on a real runtime: architectures of ``space`` timed by ``timing``."""

    def __init__(
        self,
        space: ResNetSpace,
        timing: SideBySide,
        meta: ModelMeta,
        calibration: npt.NDArray[np.uint8],
        form: QdqForm,
        target_ms: float | None = None,
        target_onnx: Path | None = None,
        confirm_runs: int = 15,
        target_speedup: float = 1.0,
    ) -> None:
        if (target_ms is None) == (target_onnx is None):
            raise EdgeloopError("give the target latency either in milliseconds or as an ONNX file, not both")
        self.space = space
        self.timing = timing
        self.meta = meta
        self.calibration = calibration
        self.form = form
        self.target_ms = target_ms
        self.target_onnx = target_onnx
        self.confirm_runs = confirm_runs
        self.target_speedup = target_speedup  # the target is target_onnx's latency divided by this
        self.built = 0
        self.build_s = 0.0
        self.timing_s = 0.0
        if target_onnx is not None:
            timing.add(TARGET, target_onnx)

    def measure(self, archs: Sequence[Arch], confirm: bool = False) -> Measurement[Arch]:
        for arch in archs:
            self._ensure(arch)
        keys = [*archs, TARGET] if self.target_onnx is not None else list(archs)
        t0 = time.perf_counter()
        samples = self.timing.time(keys, self.confirm_runs if confirm else None)
        self.timing_s += time.perf_counter() - t0
        target = median(samples[TARGET]) / self.target_speedup if self.target_onnx is not None else self.target_ms
        if target is None:  # unreachable: __init__ requires one of the two
            raise EdgeloopError("no target latency")
        return Measurement(
            ms={a: median(samples[a]) for a in archs},
            target_ms=target,
            spread={a: (min(samples[a]), max(samples[a])) for a in archs},
        )

    def _ensure(self, arch: Arch) -> None:
        """Export, quantize (INT8) and build ``arch`` once."""
        if self.timing.has(arch):
            return
        t0 = time.perf_counter()
        folder = self.timing.workdir / f"arch-{self.built}"
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = folder / "model.onnx"
        onnx_from_torch(fold_bn(self.space.build(arch)), fp32, self.space.input_size, dynamo=False)
        finalize_onnx(fp32, self.meta)
        path = fp32
        if self.timing.settings.precision == "int8":
            path = folder / "model-int8.onnx"
            quantize(fp32, path, self.calibration, self.form, self.timing.settings.runtime, "minmax")
        self.timing.add(arch, path)
        self.built += 1
        self.build_s += time.perf_counter() - t0
        log.debug("built %s (%s) in %.1fs", self.space.short(arch), arch.label(), time.perf_counter() - t0)
