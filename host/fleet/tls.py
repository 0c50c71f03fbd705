"""The host's MQTT connection settings with TLS: ``edgeloop serve`` (publisher and ingest workers) and
``edgeloop simulate`` take ``--broker mqtts://... --broker-ca --broker-cert --broker-key``.

Misconfigurations fail at start-up with what to fix, instead of a silent plain-text connection or an
endless reconnect loop: TLS files with an ``mqtt://`` URL, a certificate without its key, missing files.
The broker's certificate is always verified, host name or IP included (its SANs).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from host.fleet.pki import Pki
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, ProtocolChoice

ENV = {"ca": "EDGELOOP_BROKER_CA", "cert": "EDGELOOP_BROKER_CERT", "key": "EDGELOOP_BROKER_KEY"}


@dataclass(frozen=True)
class BrokerTls:
    """Where the host's MQTT clients find their trust anchor and client certificate (all optional)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, ca: str | None = None, cert: str | None = None, key: str | None = None) -> BrokerTls:
        """Options given on the command line win over EDGELOOP_BROKER_CA / _CERT / _KEY."""
        return cls(
            ca or os.environ.get(ENV["ca"]), cert or os.environ.get(ENV["cert"]), key or os.environ.get(ENV["key"])
        )

    @property
    def given(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))


def broker_settings(
    url: str,
    tls: BrokerTls | None = None,
    protocol: ProtocolChoice = "5",
    username: str | None = None,
    password: str | None = None,
) -> BrokerSettings:
    tls = tls or BrokerTls()
    settings = BrokerSettings.from_url(url, protocol=protocol, username=username, password=password)
    if not tls.given:
        return settings
    if not settings.tls:
        raise EdgeloopError(f"--broker-ca/--broker-cert/--broker-key need an mqtts:// broker URL, not {url!r}")
    if (tls.cert_file is None) != (tls.key_file is None):
        raise EdgeloopError("--broker-cert and --broker-key go together (the client certificate and its key)")
    for option, path in (
        ("--broker-ca", tls.ca_file),
        ("--broker-cert", tls.cert_file),
        ("--broker-key", tls.key_file),
    ):
        if path is not None and not Path(path).is_file():
            raise EdgeloopError(f"{option} {path}: no such file")
    settings.ca_file, settings.cert_file, settings.key_file = tls.ca_file, tls.cert_file, tls.key_file
    return settings


def device_broker(broker: BrokerSettings, pki_dir: Path | None, device_id: str, fleet: str) -> BrokerSettings:
    """``broker`` with a device's own certificate from the PKI folder (``devices/<id>/``), when one is given:
    how ``edgeloop simulate --device-certs`` connects each simulated device like a real one."""
    if pki_dir is None:
        return broker
    bundle = Pki(pki_dir).devices / device_id
    cert, key = bundle / "device.crt", bundle / "device.key"
    if not cert.is_file() or not key.is_file():
        raise EdgeloopError(
            f"no certificate for device {device_id} in {pki_dir}: edgeloop certs device {device_id} --fleet {fleet} "
            f"--out {pki_dir}"
        )
    if not broker.tls:
        raise EdgeloopError("device certificates need an mqtts:// broker URL (the device listener)")
    ca = broker.ca_file or str(bundle / "ca.crt")
    return dataclasses.replace(broker, ca_file=ca, cert_file=str(cert), key_file=str(key))
