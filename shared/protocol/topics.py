"""Topics: the one place that builds them (docs/design.md, "Wire contract")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.protocol.base import ID_PATTERN, ID_RE, TOPIC_ROOT, ProtocolError
from shared.protocol.reports import REPORT_KINDS


def check_id(value: str, what: str = "id") -> str:
    """Only ids matching ID_PATTERN may reach a topic (no '/', '+', '#', or empty levels)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ProtocolError(f"{what} {value!r} must match {ID_PATTERN}")
    return value


def status_topic(fleet: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_id(fleet, 'fleet')}/{check_id(device, 'device')}/status"


def command_topic(fleet: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{check_id(fleet, 'fleet')}/{check_id(device, 'device')}/cmd"


def result_topic(fleet: str, device: str) -> str:
    """Classification results of frame sources, for applications on the device's network (QoS 0)."""
    return f"{TOPIC_ROOT}/{check_id(fleet, 'fleet')}/{check_id(device, 'device')}/result"


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
    channel: Literal["status", "cmd", "report", "result"]
    kind: str | None = None


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    root = TOPIC_ROOT.split("/")
    if parts[:2] != root or len(parts) < 5:
        raise ProtocolError(f"not an edgeloop topic: {topic!r}")
    fleet, device, channel = check_id(parts[2], "fleet"), check_id(parts[3], "device"), parts[4]
    if channel in ("status", "cmd", "result") and len(parts) == 5:
        return Topic(fleet, device, channel)  # type: ignore[arg-type]
    if channel == "report" and len(parts) == 6 and parts[5] in REPORT_KINDS:
        return Topic(fleet, device, "report", parts[5])
    raise ProtocolError(f"not an edgeloop topic: {topic!r}")
