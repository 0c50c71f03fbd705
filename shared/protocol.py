"""The wire contract between host and devices (DESIGN.md, "Wire contract").

Every MQTT payload is one of the pydantic models below, serialised as JSON. Every topic name is
built by the functions at the bottom of this module and nowhere else. Models forbid unknown fields,
carry ``schema_version``, ``message_id``, ``device_id`` and ``sent_at`` (UTC), and keep numbers as
numbers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import EdgeloopError

SCHEMA_VERSION = 1
TOPIC_ROOT = "edgeloop/v1"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)
_VERSION_RE = re.compile(r"^\d+(\.\d+){0,3}$")

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Precision = Literal["fp32", "fp16", "int8"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def version_key(version: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2, 0): release versions compare numerically, not as strings."""
    if not _VERSION_RE.match(version):
        raise EdgeloopError(f"release version {version!r} must be 1 to 4 dot-separated integers, e.g. 1.2.0")
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (4 - len(parts))


def _check_version(version: str) -> str:
    try:
        version_key(version)
    except EdgeloopError as e:
        raise ValueError(str(e)) from None
    return version


Version = Annotated[str, AfterValidator(_check_version)]


class WireModel(BaseModel):
    """Base of every model on the wire: closed (extra="forbid") and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(WireModel):
    """Envelope fields every MQTT message carries."""

    schema_version: Literal[1] = 1
    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    device_id: Id
    sent_at: UtcDatetime = Field(default_factory=utcnow)


# --- releases ---------------------------------------------------------------------------------


class ReleaseRef(WireModel):
    name: Id
    version: Version

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)


class PreprocessingSpec(WireModel):
    """The model input, as shared.imaging.Preprocessing applies it."""

    mean: tuple[float, float, float]
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    size: int = Field(32, ge=8, le=1024)
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"


class ModelInfo(WireModel):
    arch: str = Field(max_length=64)
    classes: tuple[Annotated[str, StringConstraints(min_length=1, max_length=64)], ...] = Field(min_length=2)
    input_shape: tuple[int, int, int] = (3, 32, 32)
    preprocessing: PreprocessingSpec
    source_top1: Fraction = Field(description="top-1 of the source model on the host's test set")
    params: int | None = Field(None, ge=0)
    macs: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _shape_matches(self) -> ModelInfo:
        if self.input_shape[1:] != (self.preprocessing.size, self.preprocessing.size):
            raise ValueError("input_shape must match preprocessing.size")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        return self


class Artifact(WireModel):
    """One ONNX file of a release; devices pick the one meant for their runtime and precision."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    url: str = Field(description="absolute http(s) URL, or a path relative to the release's base URL")
    sha256: Sha256
    size: int = Field(gt=0)
    precision: Precision
    runtime: Literal["any", "onnxruntime", "tensorrt"] = "any"
    sparsity: Literal["dense", "2:4"] = "dense"
    calibration: Literal["none", "ptq", "qat"] = "none"
    golden_top1: Fraction | None = Field(None, description="top-1 of this file on shared/samples (device self-test)")

    @field_validator("url")
    @classmethod
    def _http_or_relative(cls, v: str) -> str:
        if "://" in v and not v.startswith(("http://", "https://")):
            raise ValueError("artifact URLs must be http(s)")
        return v


class ReleaseManifest(WireModel):
    """What a release is. Signed (ed25519) over its canonical JSON without the signature fields."""

    name: Id
    version: Version
    created_at: UtcDatetime = Field(default_factory=utcnow)
    model: ModelInfo
    artifacts: tuple[Artifact, ...] = Field(min_length=1)
    recipe: str | None = Field(None, max_length=65536, description="the compression recipe used (TOML)")
    notes: str = Field("", max_length=4096)
    key_id: str | None = Field(None, max_length=64)
    signature: str | None = Field(None, max_length=256, description="base64 ed25519 signature")

    @property
    def ref(self) -> ReleaseRef:
        return ReleaseRef(name=self.name, version=self.version)

    def artifact_for(self, runtime: str, precision: Precision | None = None) -> Artifact:
        """The artifact a device should run: exact runtime match first, then a portable one."""
        wanted = [a for a in self.artifacts if precision is None or a.precision == precision]
        for candidate in ([a for a in wanted if a.runtime == runtime], [a for a in wanted if a.runtime == "any"]):
            if candidate:
                return candidate[0]
        raise EdgeloopError(
            f"release {self.ref} has no artifact for runtime {runtime!r}"
            + (f" at precision {precision}" if precision else "")
        )


# --- host -> device commands ------------------------------------------------------------------


class BenchSettings(WireModel):
    warmup: int = Field(20, ge=0, le=10000)
    iterations: int = Field(200, ge=1, le=100000)
    batch: int = Field(1, ge=1, le=4096)
    throughput_batch: int = Field(64, ge=1, le=4096)
    throughput_rounds: int = Field(3, ge=1, le=20, description="raw throughput rounds; the report has their median")
    evaluate: bool = Field(True, description="also measure top-1 on the device's labelled eval set")
    eval_limit: int | None = Field(None, ge=1, description="evaluate on at most this many images")


class DeployCommand(Message):
    kind: Literal["deploy"] = "deploy"
    manifest: ReleaseManifest
    base_url: str | None = Field(None, description="resolves relative artifact URLs")
    rollout_id: Id | None = None
    precision: Precision | None = Field(None, description="force a precision; default: the best the device runs")
    bench: BenchSettings = BenchSettings()


class BenchmarkCommand(Message):
    kind: Literal["benchmark"] = "benchmark"
    bench: BenchSettings = BenchSettings()
    rollout_id: Id | None = None


class RecalibrateCommand(Message):
    kind: Literal["recalibrate"] = "recalibrate"
    n_images: int = Field(256, ge=8, le=100000)
    method: Literal["minmax", "entropy", "percentile"] = "percentile"
    adapt_bn: bool = True
    promote: bool = Field(True, description="activate the recalibrated engine if it verifies")


class RollbackCommand(Message):
    kind: Literal["rollback"] = "rollback"
    target: ReleaseRef | None = Field(None, description="release to return to; default: the previous one")
    manifest: ReleaseManifest | None = Field(None, description="the target's manifest, if not cached")
    base_url: str | None = None
    rollout_id: Id | None = None
    reason: str = Field("", max_length=1024)


class SampleCommand(Message):
    kind: Literal["sample"] = "sample"
    n_images: int = Field(16, ge=1, le=1000)
    upload_url: str = Field(pattern=r"^https?://")


Command: TypeAlias = Annotated[
    DeployCommand | BenchmarkCommand | RecalibrateCommand | RollbackCommand | SampleCommand,
    Field(discriminator="kind"),
]
COMMAND_KINDS = ("deploy", "benchmark", "recalibrate", "rollback", "sample")


# --- device -> host -------------------------------------------------------------------------


class SystemInfo(WireModel):
    """Health of the device. A source the device lacks is None (absent), never 0."""

    cpu_percent: NonNegFloat | None = None
    ram_used_mb: NonNegFloat | None = None
    ram_total_mb: NonNegFloat | None = None
    process_rss_mb: NonNegFloat | None = None
    gpu_load_percent: NonNegFloat | None = None
    gpu_mem_used_mb: NonNegFloat | None = None
    temperatures_c: dict[str, float] | None = None
    power_mw: dict[str, float] | None = None
    clocks_locked: bool | None = None
    nvpmodel: str | None = Field(None, max_length=64)
    sources: tuple[str, ...] = Field((), description="which telemetry sources answered (psutil, tegrastats, ...)")


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
    system: SystemInfo | None = None


class LatencyStats(WireModel):
    p50: NonNegFloat
    p90: NonNegFloat
    p99: NonNegFloat
    max: NonNegFloat
    mean: NonNegFloat


class DeployReport(Message):
    kind: Literal["deploy"] = "deploy"
    rollout_id: Id | None = None
    command_id: uuid.UUID | None = None
    release: ReleaseRef
    ok: bool
    action: Literal["deploy", "rollback"] = "deploy"
    error: str | None = Field(None, max_length=4096)
    previous_release: ReleaseRef | None = None
    artifact: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    precision: Precision | None = None
    accelerator: str = "cpu"
    cache_hit: bool = False
    fetch_s: NonNegFloat | None = None
    build_s: NonNegFloat | None = None
    selftest_top1: Fraction | None = None


class BenchmarkReport(Message):
    kind: Literal["benchmark"] = "benchmark"
    rollout_id: Id | None = None
    command_id: uuid.UUID | None = None
    release: ReleaseRef | None = None
    runtime: str
    runtime_version: str = ""
    precision: Precision
    accelerator: str = "cpu"
    batch: int = Field(ge=1)
    iterations: int = Field(ge=1)
    latency_ms: LatencyStats
    raw_throughput_ips: NonNegFloat
    top1: Fraction | None = None
    n_images: int | None = Field(None, ge=0)
    end_to_end_throughput_ips: NonNegFloat | None = None
    system: SystemInfo | None = None


class CalibrationReport(Message):
    kind: Literal["calibration"] = "calibration"
    command_id: uuid.UUID | None = None
    release: ReleaseRef
    method: str
    n_images: int = Field(ge=0)
    top1_before: Fraction | None = None
    top1_after: Fraction | None = None
    promoted: bool = False
    error: str | None = Field(None, max_length=4096)


class EventReport(Message):
    kind: Literal["event"] = "event"
    level: Literal["info", "warning", "error"]
    code: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
    message: str = Field(max_length=4096)
    command_id: uuid.UUID | None = None
    rollout_id: Id | None = None
    release: ReleaseRef | None = None


Report: TypeAlias = Annotated[
    DeployReport | BenchmarkReport | CalibrationReport | EventReport, Field(discriminator="kind")
]
REPORT_KINDS = ("deploy", "benchmark", "calibration", "event")

_command_adapter: TypeAdapter[Any] = TypeAdapter(Command)
_report_adapter: TypeAdapter[Any] = TypeAdapter(Report)


def encode(message: WireModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()


class ProtocolError(EdgeloopError):
    """A payload or topic that does not follow the wire contract."""


def _short(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:5])


def decode_command(
    payload: bytes | str,
) -> DeployCommand | BenchmarkCommand | RecalibrateCommand | RollbackCommand | SampleCommand:
    try:
        cmd: Any = _command_adapter.validate_json(payload)
    except ValidationError as e:
        raise ProtocolError(f"invalid command: {_short(e)}") from e
    return cmd


def decode_report(payload: bytes | str) -> DeployReport | BenchmarkReport | CalibrationReport | EventReport:
    try:
        report: Any = _report_adapter.validate_json(payload)
    except ValidationError as e:
        raise ProtocolError(f"invalid report: {_short(e)}") from e
    return report


def decode_status(payload: bytes | str) -> DeviceStatus:
    try:
        return DeviceStatus.model_validate_json(payload)
    except ValidationError as e:
        raise ProtocolError(f"invalid status: {_short(e)}") from e


# --- topics: the one place that builds them --------------------------------------------------


def check_id(value: str, what: str = "id") -> str:
    """Only ids matching ID_PATTERN may reach a topic (no '/', '+', '#', or empty levels)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ProtocolError(f"{what} {value!r} must match {ID_PATTERN}")
    return value


def status_topic(fleet: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_id(fleet, 'fleet')}/{check_id(device, 'device')}/status"


def command_topic(fleet: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_id(fleet, 'fleet')}/{check_id(device, 'device')}/cmd"


def report_topic(fleet: str, device: str, kind: str) -> str:
    if kind not in REPORT_KINDS:
        raise ProtocolError(f"report kind {kind!r} is not one of {REPORT_KINDS}")
    return f"{TOPIC_ROOT}/{check_id(fleet, 'fleet')}/{check_id(device, 'device')}/report/{kind}"


def report_filter(fleet: str | None = None, shared_group: str | None = None) -> str:
    """Subscription to every report (of one fleet, or all); optionally an MQTT 5 shared subscription."""
    f = "+" if fleet is None else check_id(fleet, "fleet")
    topic = f"{TOPIC_ROOT}/{f}/+/report/#"
    return f"$share/{check_id(shared_group, 'group')}/{topic}" if shared_group else topic


def status_filter(fleet: str | None = None) -> str:
    f = "+" if fleet is None else check_id(fleet, "fleet")
    return f"{TOPIC_ROOT}/{f}/+/status"


@dataclass(frozen=True)
class Topic:
    fleet: str
    device: str
    channel: Literal["status", "cmd", "report"]
    kind: str | None = None


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    root = TOPIC_ROOT.split("/")
    if parts[:2] != root or len(parts) < 5:
        raise ProtocolError(f"not an edgeloop topic: {topic!r}")
    fleet, device, channel = check_id(parts[2], "fleet"), check_id(parts[3], "device"), parts[4]
    if channel in ("status", "cmd") and len(parts) == 5:
        return Topic(fleet, device, channel)  # type: ignore[arg-type]
    if channel == "report" and len(parts) == 6 and parts[5] in REPORT_KINDS:
        return Topic(fleet, device, "report", parts[5])
    raise ProtocolError(f"not an edgeloop topic: {topic!r}")
