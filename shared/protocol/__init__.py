"""The wire contract between host and devices (DESIGN.md, "Wire contract").

Every MQTT payload is one of the pydantic models of this package, serialised as JSON; every topic
name is built by ``shared.protocol.topics`` and nowhere else. Models forbid unknown fields, carry
``schema_version``, ``message_id``, ``device_id`` and ``sent_at`` (UTC), and keep numbers as numbers.

The modules, by what they hold: ``base`` (ids, versions, times, base models), ``releases``,
``commands`` (host -> device), ``reports`` (device -> host), ``codec`` (encode/decode) and
``topics``. Everything is re-exported here, so ``from shared.protocol import X`` is the one import.
"""

from shared.protocol.base import (
    ID_PATTERN,
    SCHEMA_VERSION,
    TOPIC_ROOT,
    Fraction,
    Id,
    Message,
    NonNegFloat,
    Precision,
    ProtocolError,
    Sha256,
    UtcDatetime,
    Version,
    WireModel,
    utcnow,
    version_key,
)
from shared.protocol.codec import decode_command, decode_report, decode_status, encode
from shared.protocol.commands import (
    COMMAND_KINDS,
    BenchmarkCommand,
    BenchSettings,
    Command,
    DeployCommand,
    RecalibrateCommand,
    RollbackCommand,
    SampleCommand,
)
from shared.protocol.releases import Artifact, ModelInfo, PreprocessingSpec, ReleaseManifest, ReleaseRef
from shared.protocol.reports import (
    REPORT_KINDS,
    BenchmarkReport,
    CalibrationReport,
    DeployReport,
    DeviceStatus,
    EventReport,
    LatencyStats,
    Report,
    SystemInfo,
)
from shared.protocol.topics import (
    Topic,
    check_id,
    command_topic,
    parse_topic,
    report_filter,
    report_topic,
    status_filter,
    status_topic,
)

__all__ = [
    "COMMAND_KINDS",
    "ID_PATTERN",
    "REPORT_KINDS",
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "Artifact",
    "BenchSettings",
    "BenchmarkCommand",
    "BenchmarkReport",
    "CalibrationReport",
    "Command",
    "DeployCommand",
    "DeployReport",
    "DeviceStatus",
    "EventReport",
    "Fraction",
    "Id",
    "LatencyStats",
    "Message",
    "ModelInfo",
    "NonNegFloat",
    "Precision",
    "PreprocessingSpec",
    "ProtocolError",
    "RecalibrateCommand",
    "ReleaseManifest",
    "ReleaseRef",
    "Report",
    "RollbackCommand",
    "SampleCommand",
    "Sha256",
    "SystemInfo",
    "Topic",
    "UtcDatetime",
    "Version",
    "WireModel",
    "check_id",
    "command_topic",
    "decode_command",
    "decode_report",
    "decode_status",
    "encode",
    "parse_topic",
    "report_filter",
    "report_topic",
    "status_filter",
    "status_topic",
    "utcnow",
    "version_key",
]
