"""Building blocks of every wire model: ids, versions, UTC times, the closed base models."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
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
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)
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


class ProtocolError(EdgeloopError):
    """A payload or topic that does not follow the wire contract."""
