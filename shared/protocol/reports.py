"""Device -> host: the retained status and the reports (a discriminated union on ``kind``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, TypeAlias

from pydantic import (
    Field,
    StringConstraints,
)

from shared.protocol.base import MAX_INT, Count, Finite, Fraction, Id, Message, Name, NonNegFloat, Precision, WireModel
from shared.protocol.releases import ReleaseRef


class SystemInfo(WireModel):
    """Health of the device. A source the device lacks is None (absent), never 0."""

    cpu_percent: NonNegFloat | None = None
    ram_used_mb: NonNegFloat | None = None
    ram_total_mb: NonNegFloat | None = None
    process_rss_mb: NonNegFloat | None = None
    gpu_load_percent: NonNegFloat | None = None
    gpu_mem_used_mb: NonNegFloat | None = None
    temperatures_c: dict[Name, Finite] | None = Field(None, max_length=64)
    power_mw: dict[Name, Finite] | None = Field(None, max_length=64, description="Jetson power rails, mW")
    power_total_mw: NonNegFloat | None = Field(
        None, description="the board's input rail (VDD_IN, POM_5V_IN), else the sum of its rails"
    )
    emc_load_percent: NonNegFloat | None = Field(None, description="Jetson memory controller (EMC) load")
    emc_freq_mhz: NonNegFloat | None = None
    gpu_freq_mhz: NonNegFloat | None = None
    clocks_locked: bool | None = Field(None, description="jetson_clocks pinned the clocks")
    nvpmodel: str | None = Field(None, max_length=64)
    sources: tuple[Name, ...] = Field((), max_length=16, description="which telemetry sources answered")


class CommandCounts(WireModel):
    """Every payload on the device's command topic ends in exactly one of the last four counts."""

    received: Count = 0
    rejected: Count = Field(0, description="refused before running (each an event) or dropped (queue full)")
    duplicates: Count = Field(0, description="a command id seen before: a redelivery or a replay")
    handled: Count = Field(0, description="ran their handler (which may itself report a failure)")
    queued: Count = Field(0, description="still waiting in the command queue")


class DeviceStatus(Message):
    state: Literal["online", "offline", "busy"]
    fleet: Id
    release: ReleaseRef | None = None
    previous_release: ReleaseRef | None = None
    runtime: str | None = Field(None, max_length=64)
    runtime_version: str | None = Field(None, max_length=64)
    precision: Precision | None = None
    accelerator: str = Field("cpu", max_length=128, description="GPU name, or 'cpu'")
    gpu: bool = False
    agent_version: str = Field("", max_length=32)
    watchdog_restarts: Count = Field(0, description="worker threads the agent's watchdog had to restart")
    commands: CommandCounts | None = Field(None, description="what became of the commands received since start")
    system: SystemInfo | None = None
    warnings: tuple[Annotated[str, StringConstraints(max_length=512)], ...] = Field(
        (),
        max_length=8,
        description="what the device should run and cannot, and the fix (e.g. TensorRT that fails to load on a Jetson)",
    )


class LatencyStats(WireModel):
    p50: NonNegFloat
    p90: NonNegFloat
    p99: NonNegFloat
    max: NonNegFloat
    mean: NonNegFloat


class EngineCandidate(WireModel):
    """One runtime x precision the device tried at activation, and what it measured of it."""

    runtime: str = Field(max_length=64)
    precision: Precision
    artifact: str | None = Field(None, max_length=160)
    origin: Literal["release", "device"] = Field("release", description="device: re-quantized on the device")
    verified: bool | None = Field(None, description="agrees with the release's FP32 model (None: not checked)")
    agreement: Fraction | None = None
    drop_points: float | None = Field(None, ge=-100, le=100, allow_inf_nan=False)
    throughput_ips: NonNegFloat | None = Field(None, le=1e9)
    chosen: bool = False
    note: str = Field("", max_length=512)


class DeployReport(Message):
    kind: Literal["deploy"] = "deploy"
    rollout_id: Id | None = None
    command_id: uuid.UUID | None = None
    release: ReleaseRef
    ok: bool
    action: Literal["deploy", "rollback"] = "deploy"
    error: str | None = Field(None, max_length=4096)
    previous_release: ReleaseRef | None = None
    artifact: str | None = Field(None, max_length=160)
    runtime: str | None = Field(None, max_length=64)
    runtime_version: str | None = Field(None, max_length=64)
    precision: Precision | None = None
    accelerator: str = Field("cpu", max_length=128)
    cache_hit: bool = False
    fetch_s: NonNegFloat | None = None
    build_s: NonNegFloat | None = None
    selftest_top1: Fraction | None = None
    candidates: tuple[EngineCandidate, ...] = Field((), max_length=32, description="what was tried, and why")
    selection_s: NonNegFloat | None = Field(None, le=86400, description="what choosing between them cost")


class PowerStats(WireModel):
    """Board power sampled on a Jetson (jtop, else tegrastats) while the timed throughput run ran."""

    source: Literal["jtop", "tegrastats"]
    total_of: Name = Field(description="the input rail read (VDD_IN, POM_5V_IN), or 'sum' of the rails")
    samples: int = Field(ge=1, le=MAX_INT)
    seconds: NonNegFloat = Field(le=1e7, description="the sampled time")
    mean_mw: NonNegFloat
    peak_mw: NonNegFloat
    energy_mj: NonNegFloat = Field(description="mean_mw x seconds")
    energy_mj_per_image: NonNegFloat | None = Field(None, description="energy_mj / images inferred in that time")


class BenchmarkReport(Message):
    kind: Literal["benchmark"] = "benchmark"
    rollout_id: Id | None = None
    command_id: uuid.UUID | None = None
    release: ReleaseRef | None = None
    runtime: str = Field(max_length=64)
    runtime_version: str = Field("", max_length=64)
    precision: Precision
    accelerator: str = Field("cpu", max_length=128)
    batch: int = Field(ge=1, le=65536)
    iterations: int = Field(ge=1, le=10**7)
    latency_ms: LatencyStats
    raw_throughput_ips: NonNegFloat
    top1: Fraction | None = None
    n_images: int | None = Field(None, ge=0, le=MAX_INT)
    end_to_end_throughput_ips: NonNegFloat | None = None
    system: SystemInfo | None = None
    power: PowerStats | None = Field(None, description="None where no power source exists (off a Jetson)")


class RangeShift(WireModel):
    """One activation whose calibrated range moved (width before -> after, relative change)."""

    tensor: str = Field(max_length=256)
    before: NonNegFloat = Field(le=1e9)
    after: NonNegFloat = Field(le=1e9)
    change: float = Field(ge=-1e6, le=1e6, allow_inf_nan=False)


class CalibrationReport(Message):
    """The outcome of a ``recalibrate``: old and new engine, how they were compared, and what happened."""

    kind: Literal["calibration"] = "calibration"
    command_id: uuid.UUID | None = None
    rollout_id: Id | None = None
    action: Literal["calibrate", "promote"] = "calibrate"
    release: ReleaseRef
    method: str = Field(max_length=32)
    source: str = Field("", max_length=256, description="where the calibration images came from")
    n_images: int = Field(ge=0, le=10_000_000)
    n_eval: int = Field(0, ge=0, le=10_000_000, description="images the old and new engines were compared on")
    evaluation: Literal["labelled", "agreement", "none"] = Field(
        "none", description="labelled: top-1 on a labelled set; agreement: with FP32 on held-out field images"
    )
    top1_before: Fraction | None = None
    top1_after: Fraction | None = None
    agreement_before: Fraction | None = None
    agreement_after: Fraction | None = None
    precision_before: Precision | None = None
    form: str | None = Field(None, max_length=32, description="the Q/DQ form written (device.engine.calibration.forms)")
    form_reason: str | None = Field(None, max_length=512)
    artifact: str | None = Field(None, max_length=160, description="the new engine's artifact (device-made)")
    calibration_s: NonNegFloat | None = Field(None, le=1e7)
    build_s: NonNegFloat | None = Field(None, le=1e7)
    moved_ranges: tuple[RangeShift, ...] = Field((), max_length=10)
    better: bool | None = Field(None, description="the new engine is not worse than the old")
    promoted: bool = False
    error: str | None = Field(None, max_length=4096)


class DriftStats(WireModel):
    """The drift of a window of served images against the release's reference (shared.drift).

    ``score`` is the input drift (covariate shift) and ``drifted`` is ``score >= threshold``; devices
    that report ``input_drift`` and ``label_drift`` send the same figure in ``score`` and
    ``input_drift``. Older devices sent a mixed score (class histogram included) and neither field.
    """

    score: NonNegFloat = Field(le=1e6, description="input drift (1.0 = one input statistic at its alarm level)")
    threshold: NonNegFloat = Field(le=1e6)
    drifted: bool
    n_images: int = Field(ge=0, le=10_000_000, description="images in the window the score was taken on")
    psi_confidence: NonNegFloat = Field(le=1e6)
    psi_class: NonNegFloat = Field(le=1e6)
    channel_shift: NonNegFloat = Field(le=1e6, description="mean |channel-mean shift| in reference std units")
    detail_shift: NonNegFloat = Field(le=1e6, description="|detail (Laplacian) shift| in reference std units")
    input_drift: NonNegFloat | None = Field(
        None, le=1e6, description="covariate shift: input statistics against the reference's same classes"
    )
    label_drift: NonNegFloat | None = Field(
        None, le=1e6, description="label shift: psi_class / 0.25; the scene mix moved (informational, never flags)"
    )
    input_shifts: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")], NonNegFloat] | None = Field(
        None, max_length=32, description="each input statistic's shift in within-class spreads, beyond tolerance"
    )


class TelemetryReport(Message):
    """What the device served in the last window (``telemetry_interval_s``): the field's view of a release."""

    kind: Literal["telemetry"] = "telemetry"
    release: ReleaseRef | None = None
    runtime: str | None = Field(None, max_length=64)
    precision: Precision | None = None
    window_s: NonNegFloat = Field(le=86400)
    requests: int = Field(ge=0, le=10**12)
    errors: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")], Annotated[int, Field(ge=0, le=10**12)]
    ] = Field(default_factory=dict, max_length=32, description="failed requests by kind")
    throughput_ips: NonNegFloat = Field(le=1e9)
    latency_ms: LatencyStats | None = Field(None, description="None when nothing was served in the window")
    mean_batch: NonNegFloat = Field(0.0, le=1e6)
    mean_queue_depth: NonNegFloat = Field(0.0, le=1e9)
    max_queue_depth: int = Field(0, ge=0, le=10**9)
    drift: DriftStats | None = None


class EventReport(Message):
    kind: Literal["event"] = "event"
    level: Literal["info", "warning", "error"]
    code: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
    message: str = Field(max_length=4096)
    command_id: uuid.UUID | None = None
    rollout_id: Id | None = None
    release: ReleaseRef | None = None


AnyReport: TypeAlias = DeployReport | BenchmarkReport | CalibrationReport | TelemetryReport | EventReport
Report: TypeAlias = Annotated[AnyReport, Field(discriminator="kind")]
REPORT_KINDS = ("deploy", "benchmark", "calibration", "telemetry", "event")


class ClassificationResult(Message):
    """One served frame's answer, for local consumers (topic ``.../result``, QoS 0, frame sources only)."""

    source: str = Field(max_length=256, description="camera, video file, RTSP URL or watched folder")
    frame: int = Field(ge=0, le=10**15, description="frame counter of the source")
    label: str = Field(max_length=64)
    index: int = Field(ge=0, le=100_000)
    confidence: Fraction
    top: tuple[tuple[Annotated[str, StringConstraints(max_length=64)], Fraction], ...] = Field(max_length=10)
    latency_ms: NonNegFloat = Field(le=1e7)
    release: str | None = Field(None, max_length=160, description="name@version of the engine that answered")
