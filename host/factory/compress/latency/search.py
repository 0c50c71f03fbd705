"""Greedy search for the architecture that meets a measured latency.

From the current model, each iteration:

1. confirms the current architecture's latency against the target (a longer side-by-side
   measurement); at or under the target, the search ends;
2. measures every one-step move from it (shrink one stage by a ``round_to`` step, drop one stage's
   least important block) side by side with the current architecture, so each move's saving is a
   difference taken under the same load;
3. takes the move with the most milliseconds saved per MAC removed (the moves that buy latency
   cheaply: on a runtime whose INT8 time at 32x32 does not fall with channels, that is a block of
   stage 1, not its channels). A move that saves nothing is taken only when none saves anything.

The search knows architectures only through a ``Space`` (moves, MACs, a label) and latencies only
through a ``Meter``, which is the edge tests replace with a latency model.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Hashable)


@dataclass(frozen=True)
class Move(Generic[A]):
    name: str  # e.g. "shrink 32x32", "drop layer1.2"
    arch: A


@dataclass
class Measurement(Generic[A]):
    """Milliseconds per batch of each architecture and of the target, measured in one run."""

    ms: dict[A, float]
    target_ms: float
    spread: dict[A, tuple[float, float]] = field(default_factory=dict)  # (min, max) of the rounds


class Space(Protocol[A]):
    def start(self) -> A: ...
    def moves(self, arch: A) -> Sequence[Move[A]]: ...
    def macs(self, arch: A) -> int: ...
    def short(self, arch: A) -> str: ...


class Meter(Protocol[A]):
    def measure(self, archs: Sequence[A], confirm: bool = False) -> Measurement[A]: ...


class TargetUnreachableError(EdgeloopError):
    """No architecture of the space reached the target latency."""


@dataclass
class Candidate:
    move: str
    arch: str
    macs: int
    ms: float
    saved_ms: float
    ms_per_mmac: float | None  # saved per million MACs removed; None when it removes none


@dataclass
class Iteration:
    index: int
    arch: str
    macs: int
    confirmed_ms: float
    target_ms: float
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None


@dataclass
class SearchResult(Generic[A]):
    arch: A
    ms: float
    target_ms: float
    trace: list[Iteration]

    def trace_dicts(self) -> list[dict[str, Any]]:
        return [asdict(it) for it in self.trace]


def search(space: Space[A], meter: Meter[A], max_iterations: int = 40) -> SearchResult[A]:
    """Shrink ``space.start()`` one move at a time until its measured latency is at most the target."""
    current = space.start()
    trace: list[Iteration] = []
    best: tuple[float, A] | None = None
    for index in range(max_iterations + 1):
        confirmed = meter.measure([current], confirm=True)
        ms, target = confirmed.ms[current], confirmed.target_ms
        best = (ms, current) if best is None or ms < best[0] else best
        it = Iteration(index, space.short(current), space.macs(current), round(ms, 3), round(target, 3))
        trace.append(it)
        log.info("latency search %d: %s, %.2f MMACs, %.1f ms (target %.1f ms)",
                 index, it.arch, it.macs / 1e6, ms, target)  # fmt: skip
        if ms <= target:
            return SearchResult(current, ms, target, trace)
        moves = list(space.moves(current))
        if not moves or index == max_iterations:
            break
        chosen = _choose(space, meter, current, moves, it)
        it.chosen = chosen.name
        current = chosen.arch
    ms, arch = best if best is not None else (float("inf"), current)
    why = "no move is left" if index < max_iterations else f"{max_iterations} iterations were not enough"
    raise TargetUnreachableError(
        f"the target latency is out of reach: {why}; the smallest latency reached was {ms:.1f} ms "
        f"({space.short(arch)}, {space.macs(arch) / 1e6:.2f} MMACs) against a target of {target:.1f} ms. "
        "Raise the target, allow block removal, lower round_to or raise max_layer_ratio."
    )


def _choose(space: Space[A], meter: Meter[A], current: A, moves: list[Move[A]], it: Iteration) -> Move[A]:
    """Measure every move beside ``current`` and return the one with the best ms saved per MAC removed."""
    m = meter.measure([current, *(mv.arch for mv in moves)])
    base_ms, base_macs = m.ms[current], space.macs(current)
    scored: list[tuple[float, float, Move[A]]] = []
    for mv in moves:
        macs = space.macs(mv.arch)
        saved = base_ms - m.ms[mv.arch]
        removed = base_macs - macs
        rate = saved / (removed / 1e6) if removed > 0 else None
        it.candidates.append(Candidate(mv.name, space.short(mv.arch), macs, round(m.ms[mv.arch], 3),
                                       round(saved, 3), None if rate is None else round(rate, 4)))  # fmt: skip
        log.info("  candidate %-14s %s: %.2f MMACs, %.1f ms (saves %.1f ms beside %.1f ms)",
                 mv.name, space.short(mv.arch), macs / 1e6, m.ms[mv.arch], saved, base_ms)  # fmt: skip
        # positive savings rank by rate (a move that removes no MACs but saves time ranks first)
        key = saved / max(removed, 1) if saved > 0 else float("-inf")
        scored.append((key, saved, mv))
    key, saved, chosen = max(scored, key=lambda t: (t[0], t[1]))
    if key == float("-inf"):
        log.warning(
            "no move saved time beside %.1f ms (noise?): taking the one that cost least, %s", base_ms, chosen.name
        )
    log.info("  -> %s", chosen.name)
    return chosen
