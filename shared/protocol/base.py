"""Building blocks of every wire model: ids, versions, UTC times, the closed base models."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from shared.errors import EdgeloopError

SCHEMA_VERSION = 1
TOPIC_ROOT = "edgeloop/v1"
# Every pattern is ASCII-only and anchored at both ends. pydantic matches with Rust's regex, where
# `$` is the end of the text; Python's `re` code here uses fullmatch, because its `$` also matches
# before a trailing newline ("dev-1\n") and its \d matches every Unicode digit ("١.٠").
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION_RE = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){0,3}")
MAX_INT = 2**31 - 1  # every count fits a 32-bit database column
MAX_FLOAT = 1e12  # every figure is finite and far inside any float column

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Precision = Literal["fp32", "fp16", "int8"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, le=MAX_FLOAT, allow_inf_nan=False)]
Finite = Annotated[float, Field(ge=-MAX_FLOAT, le=MAX_FLOAT, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Name = Annotated[str, StringConstraints(max_length=64)]
Text = Annotated[str, StringConstraints(max_length=4096)]
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2200, 1, 1, tzinfo=timezone.utc)


def _utc(value: datetime) -> datetime:
    # astimezone can overflow at the ends of the datetime range (year 1 or 9999 with an offset):
    # a ValueError makes that an ordinary validation error instead of an exception past the handler
    try:
        utc = value.astimezone(timezone.utc)
    except (OverflowError, ValueError) as e:
        raise ValueError(f"time {value!r} cannot be expressed in UTC") from e
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"time {utc.isoformat()} is outside {EARLIEST.year}-{LATEST.year}")
    return utc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def version_key(version: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2, 0): release versions compare numerically, not as strings."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise EdgeloopError(f"release version {version!r} must be 1 to 4 dot-separated integers, e.g. 1.2.0")
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (4 - len(parts))


def _check_version(version: str) -> str:
    try:
        version_key(version)
    except EdgeloopError as e:
        raise ValueError(str(e)) from None
    return version


Version = Annotated[str, StringConstraints(max_length=32), AfterValidator(_check_version)]


class WireModel(BaseModel):
    """Base of every model on the wire: closed (extra="forbid") and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(WireModel):
    """Envelope fields every MQTT message carries."""

    schema_version: Literal[1] = 1
    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    device_id: Id
    sent_at: UtcDatetime = Field(default_factory=utcnow)


class ProtocolError(EdgeloopError):
    """A payload or topic that does not follow the wire contract."""
