"""Self-test of a freshly built engine on the golden images shipped in ``shared/samples``."""

from __future__ import annotations

from collections.abc import Sequence

from device.engine import bench
from device.engine.runtimes.base import Runtime
from shared import datasets
from shared.imaging import Preprocessing
from shared.samples import golden_dir


def golden_top1(runtime: Runtime, classes: Sequence[str], prep: Preprocessing) -> float:
    samples = [s for s in datasets.list_samples(golden_dir()) if s.class_name in set(classes)]
    return bench.evaluate(runtime, samples, classes, prep, batch=100).top1


def threshold(expected: float | None, tolerance: float, floor: float) -> float:
    """The lowest golden-set top-1 that passes: the release's own figure minus a tolerance, else a floor."""
    return max(0.0, expected - tolerance) if expected is not None else floor
