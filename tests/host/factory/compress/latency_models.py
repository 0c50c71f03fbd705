"""Fake latency models for the search: the measurement replaced at its edge (``search.Meter``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from host.factory.compress.latency.search import Measurement
from host.factory.compress.latency.space import Arch, ResNetSpace, StageShape

Latency = Callable[[ResNetSpace, Arch], float]


def _stage_mmacs(shape: StageShape, c_in: int) -> float:
    return sum((c_in if j == 0 else shape.width) * mid + mid * shape.width for j, mid in enumerate(shape.mids)) * (
        9 * shape.side**2 / 1e6
    )


def int8_floor_at_32(space: ResNetSpace, arch: Arch) -> float:
    """ONNX Runtime's x86 INT8 as docs/results.md measured it: a 32x32 convolution costs 9 ms whatever its
    width; at 16x16 and 8x8 time follows MACs (0.5 ms per million)."""
    shapes = space.shapes(arch)
    ms = 9.0 * (1 + 2 * len(shapes[0].mids))  # the stem and every stage-1 convolution
    c_in = shapes[0].width
    for shape in shapes[1:]:
        ms += 0.5 * _stage_mmacs(shape, c_in)
        c_in = shape.width
    return ms + 2.0


def wide_8x8_is_slow(space: ResNetSpace, arch: Arch) -> float:
    """A runtime whose time follows MACs, except that 8x8 layers cost 4x more per MAC than the rest."""
    shapes = space.shapes(arch)
    ms, c_in = 0.3 * 3 * shapes[0].width * 9 * 1024 / 1e6, shapes[0].width
    for s, shape in enumerate(shapes):
        ms += (1.2 if s == 2 else 0.3) * _stage_mmacs(shape, c_in)
        c_in = shape.width
    return ms


class FakeMeter:
    """Answers every measurement from a latency model (plus optional noise) and records the calls."""

    def __init__(
        self, space: ResNetSpace, latency: Latency, target_ms: float, noise: Callable[[Arch], float] | None = None
    ) -> None:
        self.space = space
        self.latency = latency
        self.target_ms = target_ms
        self.noise = noise
        self.calls: list[tuple[list[Arch], bool]] = []
        self.built = 0  # the real meter's counters, which the step's model card reports
        self.build_s = 0.0
        self.timing_s = 0.0

    def measure(self, archs: Sequence[Arch], confirm: bool = False) -> Measurement[Arch]:
        self.calls.append((list(archs), confirm))
        self.built += len(archs)
        extra = self.noise or (lambda a: 0.0)
        return Measurement({a: self.latency(self.space, a) + extra(a) for a in archs}, self.target_ms)
