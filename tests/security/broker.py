"""A real Mosquitto running deploy/mosquitto/mosquitto.conf, and MQTT clients that present certificates.

The config is used as shipped: only its ports (each listener on a free loopback port), its paths (the
PKI in a temp folder, deploy/'s services ACL) and its log destination are replaced, and ``render`` checks
that every other line comes through unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from host.fleet.pki import Pki
from tests.helpers import REPO, free_port, wait_port

DEPLOY_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
SERVICES_ACL = REPO / "deploy" / "mosquitto" / "acl-services"
DEPLOY_PORTS = {"8883": "device", "8884": "services", "1883": "plain"}


SUBSTITUTED = ("listener ", "cafile ", "certfile ", "keyfile ", "crlfile ", "acl_file ", "persistence_location ",
               "log_dest ")  # fmt: skip


def render(text: str, pki: Pki, workdir: Path, ports: dict[str, int]) -> str:
    """deploy/'s mosquitto.conf for this test: ports, paths and logging replaced, nothing else."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"listener (\d+)( 127\.0\.0\.1)?", line)
        new = f"listener {ports[DEPLOY_PORTS[m.group(1)]]} 127.0.0.1" if m else line  # tests stay on loopback
        new = new.replace("/etc/mosquitto/certs/", f"{pki.broker_dir}/").replace(
            "/etc/mosquitto/acl-services", str(SERVICES_ACL)
        )
        new = new.replace("/var/lib/mosquitto/", f"{workdir}/").replace("syslog", f"file {workdir}/mosquitto.log")
        if new != line and not line.startswith(SUBSTITUTED):
            raise AssertionError(f"render changed a line it must keep: {line!r}")
        out.append(new)
    if os.geteuid() == 0:
        out.append("user root")  # as root Mosquitto drops to `mosquitto`, which cannot read pytest's temp dir
    return "\n".join(out) + "\n"


@dataclass
class SecureMosquitto:
    pki: Pki
    workdir: Path
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in DEPLOY_PORTS.values()})
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render(DEPLOY_CONF.read_text(), self.pki, self.workdir, self.ports))
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports.values():
            wait_port(port)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its ACL files and the CRL."""
        if self.proc is not None:
            self.proc.send_signal(1)
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def url(self, listener: str) -> str:
        return f"mqtts://127.0.0.1:{self.ports[listener]}"

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class TlsClient:
    """A bare paho MQTT 5 client with a certificate: records what it receives and the broker's answers."""

    def __init__(
        self,
        port: int,
        client_id: str,
        ca: Path,
        cert: Path | None = None,
        key: Path | None = None,
        host: str = "127.0.0.1",
        reconnect: bool = False,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.puback: dict[int, ReasonCode] = {}
        self.connack: ReasonCode | None = None
        self.disconnects: list[str] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=reconnect
        )
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None,
                            cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)  # fmt: skip
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.host, self.port = host, port

    def connect(self, timeout: float = 10.0) -> bool:
        """True once the broker accepted the connection (CONNACK success); False when it did not, whether
        the TLS handshake failed (the broker's alert may come after the client's side of it) or CONNACK."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (ssl.SSLError, OSError):
            return False
        self.client.loop_start()
        return self.connected.wait(timeout)

    def _on_connect(self, c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: Properties | None) -> None:
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: Properties | None) -> None:
        self.connected.clear()
        self.disconnects.append(str(rc))

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: ReasonCode, p: Properties | None) -> None:
        self.puback[mid] = rc

    def subscribe(self, topic_filter: str) -> None:
        self.client.subscribe(topic_filter, 1)
        time.sleep(0.3)

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> ReasonCode | None:
        """Publish with QoS 1 and return the broker's PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        deadline = time.monotonic() + 5
        while info.mid not in self.puback and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.puback.get(info.mid)

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
