"""ONNX files built on a registered runtime and timed side by side, with the device's own code.

The runtime is chosen by its registry name (``device.engine.runtimes.registry``), so any backend the device
has (``onnxruntime``, ``openvino``, ``tensorrt``, ...) works here once it is registered. Each file
becomes that runtime's engine once; timing is ``device.engine.bench.measure_latency`` at the batch asked,
in interleaved rounds (one timed call of every engine per round, after a warm-up), so that every
file sees the same load on a shared machine: a figure is the median of its rounds.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from device.engine import bench
from device.engine.runtimes import registry
from device.engine.runtimes.base import Engine, Runtime
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

TimedPrecision = Literal["fp32", "int8"]


@dataclass(frozen=True)
class TimingSettings:
    runtime: str  # a registry name
    precision: TimedPrecision
    batch: int = 256
    threads: int = 0  # 0: the runtime's default (one per core)
    warmup: int = 1
    runs: int = 5


def open_runtime(settings: TimingSettings) -> Runtime:
    """A runtime of the named backend that runs the precision asked, or an error that says why not."""
    try:
        config = registry.runtime_config(settings.runtime, settings.threads, batches=(settings.batch,))
        runtime = registry.create(config)
    except ValueError as e:  # the config table refused (pydantic)
        raise EdgeloopError(f"runtime {settings.runtime!r}: {e}") from e
    if settings.precision not in runtime.supported_precisions():
        runtime.close()
        raise EdgeloopError(
            f"{settings.runtime} does not run {settings.precision} here "
            f"(it runs {', '.join(runtime.supported_precisions())})"
        )
    return runtime


def describe_runtime(settings: TimingSettings) -> dict[str, Any]:
    """Name, version and accelerator of the runtime; fails as ``open_runtime`` does."""
    with open_runtime(settings) as rt:
        return {"runtime": rt.name, "version": rt.version(), "accelerator": rt.accelerator()}


class SideBySide:
    """ONNX files as engines of one runtime and precision, built once each, timed in interleaved rounds."""

    def __init__(self, settings: TimingSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self._builder = open_runtime(settings)
        self._engines: dict[Hashable, Engine] = {}

    def __enter__(self) -> SideBySide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._builder.close()

    def has(self, key: Hashable) -> bool:
        return key in self._engines

    def add(self, key: Hashable, onnx_path: Path) -> Engine:
        """Build ``onnx_path`` into an engine once (a second add of ``key`` keeps the first)."""
        if key not in self._engines:
            out = self.workdir / f"engine-{len(self._engines)}"
            self._engines[key] = self._builder.build(onnx_path, self.settings.precision, out)
        return self._engines[key]

    def time(self, keys: Sequence[Hashable], runs: int | None = None) -> dict[Hashable, list[float]]:
        """Milliseconds per call of each engine, one sample per round, rounds interleaved."""
        runs = runs or self.settings.runs
        runtimes: dict[Hashable, Runtime] = {}
        try:
            for key in dict.fromkeys(keys):
                runtimes[key] = rt = open_runtime(self.settings)
                rt.load(self._engines[key])
            samples: dict[Hashable, list[float]] = {key: [] for key in runtimes}
            for r in range(runs):
                for key, rt in runtimes.items():
                    warmup = self.settings.warmup if r == 0 else 0
                    lat = bench.measure_latency(rt, batch=self.settings.batch, warmup=warmup, iterations=1)
                    samples[key].append(lat.latency_ms["p50"])
            return samples
        finally:
            for rt in runtimes.values():
                rt.close()


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))
