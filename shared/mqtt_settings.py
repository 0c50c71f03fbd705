"""Where and how an ``MqttSession`` connects (``shared.mqtt`` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from shared.errors import EdgeloopError

ProtocolChoice = Literal["5", "3.1.1", "auto"]


@dataclass
class BrokerSettings:
    """Where and how to connect. Built from the agent/host config or parsed from a URL."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    username: str | None = None
    password: str | None = None
    protocol: ProtocolChoice = "5"
    keepalive: int = 30
    session_expiry_s: int = 7 * 24 * 3600  # persistent session: QoS 1 commands wait while offline
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    v5_connack_timeout_s: float = 3.0  # protocol="auto": fall back to 3.1.1 after this long without CONNACK

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BrokerSettings:
        """mqtt://host:1883 or mqtts://host:8883 (credentials come from settings, not the URL)."""
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise EdgeloopError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
        if not u.hostname:
            raise EdgeloopError(f"broker URL {url!r} has no host")
        tls = u.scheme in ("mqtts", "ssl")
        return cls(host=u.hostname, port=u.port or (8883 if tls else 1883), tls=tls, **kwargs)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
