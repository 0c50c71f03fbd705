"""Choosing what a device runs by measuring it: the fastest candidate that verifies wins.

The candidates (``Option``, planned in ``trials``) are runtime x precision pairs the device can run and the
release carries, best guess first. ``Selector`` tries each (``TryOption``: build, self-test and, for INT8,
the gate against FP32), times every one that passes (``Measure``: raw throughput, the median of three
short rounds at ``[selection] batch``) and keeps the fastest; each loser is closed as soon as it loses.
An engine that could not be verified (an INT8 file in a release without FP32) only wins when nothing
verified did. The cost is bounded by ``[selection] budget_s``: the candidates not reached by then are
listed as skipped. A single candidate is not timed: there is nothing to choose between.

Every candidate goes into the DeployReport's ``candidates`` with its figures, and the winner's note
says why it won (its throughput against the runner-up's).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from device.activation.int8 import Loaded
from device.activation.records import ActivationError
from device.config import SelectionConfig
from device.engine import bench
from device.engine.runtimes.base import Runtime
from shared.protocol import Artifact, EngineCandidate

log = logging.getLogger(__name__)

Event = tuple[str, str, str]  # (level, code, message) for an EventReport


@dataclass(frozen=True)
class Option:
    """One thing to try: an artifact on a runtime (``calibrate``: an INT8 engine made here from it)."""

    runtime: str
    artifact: Artifact
    calibrate: bool = False

    @property
    def label(self) -> str:
        return f"{self.runtime} {'int8 calibrated here' if self.calibrate else self.artifact.precision}"


@dataclass
class Trial:
    """An option that built and passed its checks: the engine it runs and what it found on the way."""

    loaded: Loaded
    top1: float  # golden-set self-test
    own: EngineCandidate  # the engine ``loaded`` runs
    tried: list[EngineCandidate] = field(default_factory=list)  # refused on the way (e.g. the release's INT8)
    events: list[Event] = field(default_factory=list)
    trusted: bool = True  # False: INT8 that could not be verified against FP32
    ips: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.loaded.runtime.target(), self.loaded.artifact.sha256)


@dataclass
class Selected:
    loaded: Loaded
    top1: float
    candidates: list[EngineCandidate]
    events: list[Event]
    seconds: float


TryOption = Callable[[Option], Trial]  # raises ActivationError when the option fails
Measure = Callable[[Runtime], float]  # img/s


def throughput(settings: SelectionConfig) -> Measure:
    """Raw throughput at the selection batch, the median of three rounds of ``seconds / 3`` (at least two
    batches each, so the time stays near ``seconds`` even where a batch is slow)."""

    def measure(runtime: Runtime) -> float:
        rounds = bench.throughput_rounds(
            runtime, batch=settings.batch, rounds=3, min_seconds=settings.seconds / 3, min_batches=2
        )
        return statistics.median(rounds)

    return measure


def _failed(option: Option, error: ActivationError) -> EngineCandidate:
    return EngineCandidate(
        runtime=option.runtime,
        precision="int8" if option.calibrate else option.artifact.precision,
        artifact=option.artifact.name,
        origin="device" if option.calibrate else "release",
        verified=False,
        note=f"{error.code}: {error}"[:512],
    )


def _skipped(option: Option, why: str) -> EngineCandidate:
    return EngineCandidate(
        runtime=option.runtime,
        precision="int8" if option.calibrate else option.artifact.precision,
        artifact=option.artifact.name,
        origin="device" if option.calibrate else "release",
        note=why[:512],
    )


class Selector:
    def __init__(
        self,
        settings: SelectionConfig,
        try_option: TryOption,
        measure: Measure,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings, self.try_option, self.measure, self.clock = settings, try_option, measure, clock

    def run(self, options: Sequence[Option]) -> Selected:
        t0 = self.clock()
        if not options:
            raise ActivationError("no_suitable_artifact", "nothing to choose from")
        if len(options) == 1 or not self.settings.measure:
            trial = self.try_option(options[0])  # errors propagate: there is no other candidate
            own = trial.own.model_copy(update={"chosen": True})
            return Selected(trial.loaded, trial.top1, [*trial.tried, own], trial.events, self.clock() - t0)
        return self._measure_all(options, t0)

    def _measure_all(self, options: Sequence[Option], t0: float) -> Selected:
        best: Trial | None = None
        timed: list[Trial] = []
        listed: list[EngineCandidate | Trial] = []  # in the order tried; trials become candidates at the end
        errors: list[tuple[Option, ActivationError]] = []
        events: list[Event] = []
        for i, option in enumerate(options):
            if best is not None and self.clock() - t0 > self.settings.budget_s:
                why = f"not tried: the selection budget of {self.settings.budget_s:.0f} s was spent"
                listed += [_skipped(o, why) for o in options[i:]]
                break
            try:
                trial = self.try_option(option)
            except ActivationError as e:
                log.info("candidate %s failed: %s", option.label, e)
                errors.append((option, e))
                listed.append(_failed(option, e))
                continue
            events += trial.events
            listed += trial.tried
            if any(t.key == trial.key for t in timed):  # e.g. the INT8 gate fell back to the FP32 tried anyway
                trial.loaded.runtime.close()
                continue
            trial.ips = self.measure(trial.loaded.runtime)
            log.info("candidate %s: %.0f img/s at batch %d", option.label, trial.ips, self.settings.batch)
            timed.append(trial)
            listed.append(trial)
            best = self._keep(best, trial)
        if best is None:
            detail = "; ".join(f"{o.label}: {e}" for o, e in errors)
            raise ActivationError(errors[0][1].code, f"no candidate could run: {detail}"[:4000])
        candidates = [x if isinstance(x, EngineCandidate) else self._describe(x, best, timed) for x in listed]
        return Selected(best.loaded, best.top1, candidates, events, self.clock() - t0)

    @staticmethod
    def _rank(trial: Trial) -> tuple[bool, float]:
        return (trial.trusted, trial.ips or 0.0)

    def _keep(self, best: Trial | None, trial: Trial) -> Trial:
        """The better of the two; the other one's engine is closed."""
        if best is None:
            return trial
        winner, loser = (trial, best) if self._rank(trial) > self._rank(best) else (best, trial)
        loser.loaded.runtime.close()
        return winner

    def _describe(self, trial: Trial, best: Trial, timed: list[Trial]) -> EngineCandidate:
        ips = trial.ips or 0.0
        if trial is best:
            others = [t for t in timed if t is not best]
            runner = max(others, key=self._rank) if others else None
            why = "fastest verified" if trial.trusted else "no candidate verified; fastest unverified"
            if runner is not None and runner.ips:
                why += f": {ips / runner.ips:.2f}x the runner-up ({runner.own.runtime} {runner.own.precision})"
        else:
            why = f"{ips / (best.ips or 1.0):.2f}x the winner" + ("" if trial.trusted else ", unverified")
        note = f"{why}; {trial.own.note}" if trial.own.note else why
        return trial.own.model_copy(update={"throughput_ips": ips, "chosen": trial is best, "note": note[:512]})
