"""What the store hands back: typed, immutable records, and the states they can be in.

Every state of a device, a rollout, a wave and a device within a rollout is defined here, once, as a
``Literal``; the groupings the controller, the CLI and the demo test against (terminal, failed, ...)
are derived here too. Reports come back as the wire models they arrived as (``DeployReport``,
``BenchmarkReport``, ...), so the rollout gates read attributes the protocol defines, not dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeAlias, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, field_serializer

from host.fleet.rollout_config import RolloutConfig
from host.fleet.store.calibration_records import CalibrationFlag, GateEvent
from shared.protocol import (
    BenchmarkReport,
    CalibrationReport,
    DeployReport,
    DriftStats,
    EventReport,
    Precision,
    ReleaseRef,
    SystemInfo,
    TelemetryReport,
)

# -- states ---------------------------------------------------------------------------------------
DeviceState: TypeAlias = Literal["online", "offline", "busy"]  # DeviceStatus.state (a test keeps them equal)
RolloutState: TypeAlias = Literal["running", "rolling_back", "completed", "aborted", "rolled_back"]
WaveState: TypeAlias = Literal["pending", "sent", "passed", "failed"]
DeviceRolloutState: TypeAlias = Literal[
    "pending",  # in a wave that has not started
    "sent",  # deploy sent, no report yet
    "deployed",  # deployed, waiting for its benchmark
    "passed",  # measured within the gates
    "failed",  # the deploy failed on the device
    "timeout",  # no report before the wave deadline
    "gate_failed",  # measured outside the gates
    "rolling_back",  # rollback sent
    "rolled_back",
    "rollback_failed",
    "rollback_timeout",
    "no_previous",  # ran nothing before: nothing to roll back to
]

ROLLOUT_STATES: tuple[RolloutState, ...] = get_args(RolloutState)
TERMINAL: frozenset[RolloutState] = frozenset({"completed", "aborted", "rolled_back"})
ACTIVE: frozenset[RolloutState] = frozenset(ROLLOUT_STATES) - TERMINAL  # what the controller drives
UNDONE: frozenset[RolloutState] = frozenset({"aborted", "rolled_back"})  # nothing left to roll back
WAVE_FINISHED: frozenset[WaveState] = frozenset({"passed", "failed"})
AWAITING_REPORTS: frozenset[DeviceRolloutState] = frozenset({"sent", "deployed"})
FAILED_DEVICE_STATES: frozenset[DeviceRolloutState] = frozenset({"failed", "timeout", "gate_failed"})
COMMAND_IN_FLIGHT: frozenset[DeviceRolloutState] = frozenset({"sent", "rolling_back"})  # re-sent if unpublished
ROLLBACK_SETTLED: frozenset[DeviceRolloutState] = frozenset({"rolled_back", "rolling_back", "no_previous"})


# -- devices ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device as its last status described it (the ``devices`` table)."""

    fleet: str
    device_id: str
    state: DeviceState
    release_name: str | None
    release_version: str | None
    previous_name: str | None
    previous_version: str | None
    runtime: str | None
    runtime_version: str | None
    precision: Precision | None
    accelerator: str | None
    gpu: bool
    agent_version: str | None
    system: SystemInfo | None
    last_seen: datetime
    warnings: tuple[str, ...] = ()  # what the device should run and cannot (DeviceStatus.warnings)


@dataclass(frozen=True, slots=True)
class BenchmarkRecord:
    """One benchmark report, flattened for charts and the fleet view (the ``benchmarks`` table)."""

    message_id: str
    fleet: str
    device_id: str
    rollout_id: str | None
    release_name: str | None
    release_version: str | None
    runtime: str | None
    precision: Precision | None
    accelerator: str | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    top1: float | None
    n_images: int | None
    throughput_ips: float | None
    e2e_throughput_ips: float | None
    sent_at: datetime  # the device's clock (at most the host's + MAX_CLOCK_SKEW)
    received_at: datetime  # the host's clock: what views of several devices are ordered by


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    """One TelemetryReport, flattened: a point of the served-latency and drift time series (``telemetry``)."""

    message_id: str
    fleet: str
    device_id: str
    release_name: str | None
    release_version: str | None
    runtime: str | None
    precision: Precision | None
    window_s: float
    requests: int
    errors: dict[str, int]
    error_count: int
    throughput_ips: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    mean_batch: float
    mean_queue_depth: float
    max_queue_depth: int
    drift_score: float | None
    drift_threshold: float | None
    drifted: bool | None
    drift: DriftStats | None
    sent_at: datetime
    received_at: datetime


class DriftFlag(BaseModel):
    """A device's latest drift score (the fleet view's ``drift`` field).

    ``score`` is what ``drifted`` is decided on: the input drift of devices that report it apart
    (``input_drift``), beside their label drift; older devices sent one mixed score and neither.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: float
    threshold: float
    drifted: bool
    input_drift: float | None = None  # covariate shift: input statistics only
    label_drift: float | None = None  # label shift: the predicted-class mix (never flags)
    n_images: int
    at: datetime  # when the device sent it

    @field_serializer("at")
    def _iso(self, at: datetime) -> str:  # like every other time of the API (web.encode)
        return at.isoformat()

    @classmethod
    def of(cls, t: TelemetryRecord | None) -> DriftFlag | None:
        if t is None or t.drift is None:
            return None
        d = t.drift
        return cls(
            score=d.score,
            threshold=d.threshold,
            drifted=d.drifted,
            input_drift=d.input_drift,
            label_drift=d.label_drift,
            n_images=d.n_images,
            at=t.sent_at,
        )


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """One line of the fleet view: a device with its latest benchmark, served telemetry and calibration."""

    fleet: str
    device_id: str
    state: DeviceState
    release: str | None
    runtime: str | None
    precision: Precision | None
    accelerator: str | None
    gpu: bool
    p50_ms: float | None
    p99_ms: float | None
    top1: float | None
    benchmark_release: str | None
    last_seen: datetime | None
    system: SystemInfo | None
    # what the device served in its latest telemetry window (None: it has not reported serving)
    served_p50_ms: float | None = None
    served_p99_ms: float | None = None
    served_throughput_ips: float | None = None
    served_requests: int | None = None
    served_errors: int | None = None
    served_release: str | None = None
    served_at: datetime | None = None
    drift: DriftFlag | None = None
    calibration: CalibrationFlag | None = None  # the latest recalibrate outcome
    int8_gate: GateEvent | None = None  # the latest event of the INT8 gate at activation
    warnings: tuple[str, ...] = ()  # the device's own, from its latest status

    @classmethod
    def of(
        cls,
        d: DeviceRecord,
        b: BenchmarkRecord | None,
        t: TelemetryRecord | None = None,
        calibration: CalibrationFlag | None = None,
        int8_gate: GateEvent | None = None,
    ) -> FleetDevice:
        return cls(
            fleet=d.fleet,
            device_id=d.device_id,
            state=d.state,
            release=f"{d.release_name}@{d.release_version}" if d.release_name else None,
            runtime=d.runtime,
            precision=d.precision,
            accelerator=d.accelerator,
            gpu=d.gpu,
            p50_ms=b.p50_ms if b else None,
            p99_ms=b.p99_ms if b else None,
            top1=b.top1 if b else None,
            benchmark_release=f"{b.release_name}@{b.release_version}" if b and b.release_name else None,
            last_seen=d.last_seen,
            system=d.system,
            warnings=d.warnings,
            served_p50_ms=t.p50_ms if t else None,
            served_p99_ms=t.p99_ms if t else None,
            served_throughput_ips=t.throughput_ips if t else None,
            served_requests=t.requests if t else None,
            served_errors=t.error_count if t else None,
            served_release=f"{t.release_name}@{t.release_version}" if t and t.release_name else None,
            served_at=t.sent_at if t else None,
            drift=DriftFlag.of(t),
            calibration=calibration,
            int8_gate=int8_gate,
        )


# -- reports ----------------------------------------------------------------------------------------
AnyReport: TypeAlias = DeployReport | BenchmarkReport | CalibrationReport | TelemetryReport | EventReport
R = TypeVar("R", DeployReport, BenchmarkReport, CalibrationReport, EventReport)


@dataclass(frozen=True, slots=True)
class ReceivedReport(Generic[R]):
    """A report as the device sent it (the parsed wire model), with who sent it and when it arrived."""

    device_id: str
    command_id: str | None
    received_at: datetime
    report: R
    fleet: str = ""

    def answers(self, fleet: str, device_id: str) -> bool:
        """True when this report came from the device (of the fleet) its command went to: the topic's
        identity (bound to the device's certificate by the broker's ACL) and the payload agree."""
        return self.fleet == fleet and self.device_id == device_id == self.report.device_id


@dataclass(frozen=True, slots=True)
class EventRecord:
    fleet: str
    report: EventReport


# -- rollouts ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RolloutMember:
    """A device as a new rollout plans it: what to roll back to, and whether it was online."""

    device_id: str
    previous_name: str | None
    previous_version: str | None
    was_online: bool


class FailedDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    state: DeviceRolloutState
    error: str | None


class WaveSummary(BaseModel):
    """What a gated wave measured (stored with the wave, shown by the API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: int
    failed: list[FailedDevice]
    failure_fraction: float
    mean_top1: float | None
    offline: list[str]


@dataclass(frozen=True, slots=True)
class WaveRecord:
    rollout_id: str
    wave: int
    state: WaveState
    started_at: datetime | None
    deadline: datetime | None
    finished_at: datetime | None
    summary: WaveSummary | None


@dataclass(frozen=True, slots=True)
class RolloutDeviceRecord:
    """One device in one rollout: its wave, state, the command it was sent and what it measured."""

    rollout_id: str
    device_id: str
    wave: int
    state: DeviceRolloutState
    command_id: str | None
    command: str | None  # the exact payload, so a resumed host re-sends the same message id
    published: bool
    previous_name: str | None
    previous_version: str | None
    was_online: bool | None
    top1: float | None
    p99_ms: float | None
    error: str | None
    updated_at: datetime
    epoch: int | None = None  # the controller lease's epoch its command was stored under (None: no lease)

    @property
    def previous(self) -> ReleaseRef | None:
        if not self.previous_name or not self.previous_version:
            return None
        return ReleaseRef(name=self.previous_name, version=self.previous_version)


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """A rollout (the ``rollouts`` table), without its waves and devices."""

    id: str
    release_name: str
    release_version: str
    fleet: str
    state: RolloutState
    config: RolloutConfig
    current_wave: int
    reason: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RolloutDetail(RolloutRecord):
    """A rollout with its waves and member devices (ordered by wave, then device id)."""

    waves: tuple[WaveRecord, ...]
    devices: tuple[RolloutDeviceRecord, ...]

    def members(self, wave: int) -> list[RolloutDeviceRecord]:
        return [d for d in self.devices if d.wave == wave]
