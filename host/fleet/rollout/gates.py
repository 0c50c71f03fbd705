"""The gates: what a device's reports must show, and what failure fraction a wave may have.

Per device, a wave counts a failure for: a failed deploy, a missing report at the deadline
(offline devices are named in the summary, never skipped silently), top-1 below
``source_top1 - max_accuracy_drop`` points, or p99 latency over budget. The wave passes when
failures / wave size <= ``abort_failures``. These functions read the wire models the devices sent
(``BenchmarkReport``) and the store's records; they write nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from host.fleet.rollout_config import RolloutConfig
from host.fleet.store.records import (
    FAILED_DEVICE_STATES,
    DeviceRolloutState,
    FailedDevice,
    RolloutDeviceRecord,
    WaveSummary,
)
from shared.protocol import BenchmarkReport, ReleaseManifest


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one device's benchmark says about the release."""

    state: DeviceRolloutState  # "passed" or "gate_failed"
    top1: float | None
    p99_ms: float
    error: str | None  # every problem found, "; "-separated


def accuracy_floor(manifest: ReleaseManifest, cfg: RolloutConfig) -> float:
    return manifest.model.source_top1 - cfg.max_accuracy_drop / 100


def judge(bench: BenchmarkReport, manifest: ReleaseManifest, cfg: RolloutConfig) -> Verdict:
    floor = accuracy_floor(manifest, cfg)
    top1, p99 = bench.top1, bench.latency_ms.p99
    problems = []
    if top1 is not None and top1 < floor:
        problems.append(
            f"top-1 {100 * top1:.2f}% < gate {100 * floor:.2f}% "
            f"(source {100 * manifest.model.source_top1:.2f}% - {cfg.max_accuracy_drop} pts)"
        )
    if top1 is None and cfg.max_accuracy_drop < 100:
        problems.append("device reported no accuracy (no eval set configured)")
    if cfg.p99_budget_ms is not None and p99 > cfg.p99_budget_ms:
        problems.append(f"p99 {p99:.3f} ms > budget {cfg.p99_budget_ms} ms")
    return Verdict("gate_failed" if problems else "passed", top1, p99, "; ".join(problems) or None)


def summarize(members: Sequence[RolloutDeviceRecord]) -> WaveSummary:
    """The wave's outcome, once every member is resolved (passed, failed or timed out)."""
    failed = [d for d in members if d.state in FAILED_DEVICE_STATES]
    top1s = [d.top1 for d in members if d.top1 is not None]
    return WaveSummary(
        devices=len(members),
        failed=[FailedDevice(device_id=d.device_id, state=d.state, error=d.error) for d in failed],
        failure_fraction=len(failed) / max(1, len(members)),
        mean_top1=sum(top1s) / len(top1s) if top1s else None,
        offline=[d.device_id for d in members if not d.was_online],
    )


def passes(summary: WaveSummary, cfg: RolloutConfig) -> bool:
    return summary.failure_fraction <= cfg.abort_failures


def failure_reasons(summary: WaveSummary) -> str:
    return "; ".join(f"{f.device_id}: {f.error or f.state}" for f in summary.failed)
