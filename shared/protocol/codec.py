"""JSON encoding and validating decoders: the only way payloads enter or leave a process."""

from __future__ import annotations

from typing import Any

from pydantic import (
    TypeAdapter,
    ValidationError,
)

from shared.protocol.base import ProtocolError, WireModel
from shared.protocol.commands import (
    BenchmarkCommand,
    Command,
    DeployCommand,
    RecalibrateCommand,
    RollbackCommand,
    SampleCommand,
)
from shared.protocol.reports import (
    AnyReport,
    DeviceStatus,
    Report,
)

_command_adapter: TypeAdapter[Any] = TypeAdapter(Command)
_report_adapter: TypeAdapter[Any] = TypeAdapter(Report)


def encode(message: WireModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()


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


def decode_report(payload: bytes | str) -> AnyReport:
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
