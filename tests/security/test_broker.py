"""The deploy/ Mosquitto config against real clients: who may connect where, publish what, read what.

Every "nothing arrives" check publishes a sentinel on the same connection after the refused messages and
waits for it: QoS 1 keeps a connection's order, so anything refused that had got through would be there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.config import BrokerConfig, TlsConfig
from host.fleet.pki import Pki
from shared.mqtt import MqttSession
from tests.helpers import REPO
from tests.security.broker import DEPLOY_CONF, SecureMosquitto, TlsClient

pytestmark = pytest.mark.security


@pytest.fixture
def clients() -> Iterator[list[TlsClient]]:
    made: list[TlsClient] = []
    yield made
    for c in made:
        c.close()


def _device(broker: SecureMosquitto, pki: Pki, device: str, client_id: str = "x", reconnect: bool = False) -> TlsClient:
    bundle = pki.devices / device
    return TlsClient(broker.ports["device"], client_id, pki.ca_cert, bundle / "device.crt", bundle / "device.key",
                     reconnect=reconnect)  # fmt: skip


def _host(broker: SecureMosquitto, pki: Pki, client_id: str = "edgeloop-host-test") -> TlsClient:
    cert = pki.services / "edgeloop-host.crt"
    return TlsClient(broker.ports["services"], client_id, pki.ca_cert, cert, cert.with_suffix(".key"))


def _connected(clients: list[TlsClient], c: TlsClient) -> TlsClient:
    clients.append(c)
    assert c.connect(), f"{c.client._client_id!r} could not connect: {c.connack}"
    return c


def _wait_topic(c: TlsClient, topic: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while topic not in c.topics():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} never arrived; got {c.topics()}")
        time.sleep(0.05)


def test_the_tests_run_deploys_config_and_it_keeps_plain_mqtt_on_loopback() -> None:
    text = DEPLOY_CONF.read_text()
    listeners = re.findall(r"^listener .*$", text, flags=re.MULTILINE)
    assert listeners == ["listener 8883", "listener 8884", "listener 1883 127.0.0.1"]
    assert "per_listener_settings true" in text
    device_part = text.split("listener 8883")[1].split("listener 8884")[0]
    for line in ("require_certificate true", "use_identity_as_username true", "use_username_as_clientid true",
                 "allow_anonymous false", "crlfile", "acl_file /etc/mosquitto/certs/acl-devices"):  # fmt: skip
        assert line in device_part
    services_part = text.split("listener 8884")[1].split("listener 1883")[0]
    assert "cafile /etc/mosquitto/certs/services-ca.crt" in services_part and "allow_anonymous false" in services_part
    assert re.search(r"^message_size_limit \d+$", text, flags=re.MULTILINE)
    assert re.search(r"^max_packet_size \d+$", text, flags=re.MULTILINE)
    compose = (REPO / "deploy" / "compose.yaml").read_text()
    published = re.findall(r'"([^"]*:\d+:\d+)"', compose)
    assert published and all(p.startswith(("127.0.0.1:", "${EDGELOOP_PUBLISH_ADDR:-127.0.0.1}:")) for p in published)


def test_a_device_publishes_only_its_own_topics_under_its_own_fleet(
    secure_broker: SecureMosquitto, pki: Pki, clients: list[TlsClient]
) -> None:
    host = _connected(clients, _host(secure_broker, pki))
    host.subscribe("edgeloop/v1/#")
    a = _connected(clients, _device(secure_broker, pki, "dev-a"))
    forbidden = [
        "edgeloop/v1/lab/dev-b/status",  # another device of its fleet
        "edgeloop/v1/lab/dev-b/report/deploy",
        "edgeloop/v1/other/dev-a/status",  # its own id under another fleet
        "edgeloop/v1/other/dev-a/report/benchmark",
        "edgeloop/v1/other/dev-c/report/deploy",  # another fleet's device
        "edgeloop/v1/lab/dev-a/cmd",  # commands come from the host only, also its own
        "edgeloop/v1/lab/dev-b/cmd",
        "edgeloop/v1/lab/dev-a/report/deploy/more",
        "edgeloop/v1/lab/dev-a",
    ]
    for topic in forbidden:
        assert str(a.publish(topic, b'{"forged": true}', retain=topic.endswith("status"))) == "Not authorized", topic
    for topic in (
        "edgeloop/v1/lab/dev-a/status",
        "edgeloop/v1/lab/dev-a/report/deploy",
        "edgeloop/v1/lab/dev-a/result",
    ):
        assert str(a.publish(topic, retain=topic.endswith("status"))) == "Success"
    _wait_topic(host, "edgeloop/v1/lab/dev-a/result")
    assert host.topics() == ["edgeloop/v1/lab/dev-a/status", "edgeloop/v1/lab/dev-a/report/deploy",
                             "edgeloop/v1/lab/dev-a/result"]  # fmt: skip
    late = _connected(clients, _host(secure_broker, pki, "edgeloop-host-late"))  # no forged retained status either
    late.subscribe("edgeloop/v1/+/+/status")
    time.sleep(0.5)
    assert late.topics() == ["edgeloop/v1/lab/dev-a/status"]


def test_a_device_reads_only_its_own_commands(
    secure_broker: SecureMosquitto, pki: Pki, clients: list[TlsClient]
) -> None:
    a = _connected(clients, _device(secure_broker, pki, "dev-a"))
    for f in ("edgeloop/v1/#", "edgeloop/v1/+/+/cmd", "edgeloop/v1/lab/dev-b/cmd", "edgeloop/v1/other/dev-a/cmd",
              "$share/spy/edgeloop/v1/+/+/report/#", "#"):  # fmt: skip
        a.subscribe(f)
    b = _connected(clients, _device(secure_broker, pki, "dev-b"))
    b.subscribe("edgeloop/v1/lab/dev-b/cmd")
    host = _connected(clients, _host(secure_broker, pki))
    for topic in ("edgeloop/v1/lab/dev-b/cmd", "edgeloop/v1/other/dev-a/cmd", "edgeloop/v1/other/dev-c/cmd"):
        assert str(host.publish(topic, b'{"kind": "rollback"}')) == "Success"
    assert str(b.publish("edgeloop/v1/lab/dev-b/report/deploy")) == "Success"  # nor other devices' reports
    host.publish("edgeloop/v1/lab/dev-a/cmd", b"sentinel")
    _wait_topic(a, "edgeloop/v1/lab/dev-a/cmd")
    assert set(a.topics()) == {"edgeloop/v1/lab/dev-a/cmd"}
    _wait_topic(b, "edgeloop/v1/lab/dev-b/cmd")  # delivery itself works


def test_no_connection_without_a_certificate_of_the_listeners_ca(
    secure_broker: SecureMosquitto, pki: Pki, clients: list[TlsClient], tmp_path: Path
) -> None:
    dev, svc = secure_broker.ports["device"], secure_broker.ports["services"]
    rogue = Pki(tmp_path / "rogue")  # another CA, with a certificate for the same device id
    rogue.init("127.0.0.1")
    rogue.issue_device("dev-a", "lab")
    host_cert = pki.services / "edgeloop-host.crt"
    attempts = {
        "device listener, no certificate": TlsClient(dev, "dev-a", pki.ca_cert),
        "services listener, no certificate": TlsClient(svc, "edgeloop-host-1", pki.ca_cert),
        "device listener, another CA's dev-a": TlsClient(
            dev, "dev-a", pki.ca_cert, rogue.devices / "dev-a" / "device.crt", rogue.devices / "dev-a" / "device.key"
        ),
        "services listener, a device certificate": _device(secure_broker, pki, "dev-b", "edgeloop-ingest-0"),
        "device listener, a host certificate": TlsClient(
            dev, "h", pki.ca_cert, host_cert, host_cert.with_suffix(".key")
        ),
    }
    attempts["services listener, a device certificate"].port = svc
    for what, client in attempts.items():
        clients.append(client)
        assert not client.connect(timeout=3), what
    plain = TlsClient(dev, "plain", pki.ca_cert)  # plain MQTT (no TLS) to the TLS listener
    plain.client._ssl = False
    plain.client._ssl_context = None
    clients.append(plain)
    assert not plain.connect(timeout=3)
    assert _connected(clients, _device(secure_broker, pki, "dev-a")).connected.is_set()  # the real one still can


def test_the_client_id_is_the_certificate_identity(
    secure_broker: SecureMosquitto, pki: Pki, clients: list[TlsClient]
) -> None:
    """dev-b asking for dev-a's client id is connected as dev-b and dev-a stays on; only a holder of dev-a's
    own key can replace dev-a's connection (MQTT session takeover: the key is the identity, revoke it if stolen)."""
    a = _connected(clients, _device(secure_broker, pki, "dev-a", client_id="dev-a"))
    a.subscribe("edgeloop/v1/lab/dev-a/cmd")
    impostor = _connected(clients, _device(secure_broker, pki, "dev-b", client_id="dev-a"))
    impostor.subscribe("edgeloop/v1/lab/dev-a/cmd")
    impostor.subscribe("edgeloop/v1/lab/dev-b/cmd")
    time.sleep(1.0)
    assert a.connected.is_set() and a.disconnects == []
    host = _connected(clients, _host(secure_broker, pki))
    host.publish("edgeloop/v1/lab/dev-b/cmd", b"for dev-b")
    host.publish("edgeloop/v1/lab/dev-a/cmd", b"for dev-a")
    _wait_topic(a, "edgeloop/v1/lab/dev-a/cmd")
    _wait_topic(impostor, "edgeloop/v1/lab/dev-b/cmd")
    assert impostor.topics() == ["edgeloop/v1/lab/dev-b/cmd"]  # it is dev-b, whatever id it asked for
    assert "as dev-b (p5" in secure_broker.log() and "as dev-a (p5" in secure_broker.log()
    twin = _connected(clients, _device(secure_broker, pki, "dev-a", client_id="anything"))
    deadline = time.monotonic() + 5
    while a.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not a.connected.is_set() and twin.connected.is_set()
    assert "Client dev-a already connected, closing old connection" in secure_broker.log()


def test_new_and_revoked_devices_take_effect_on_a_reload(
    secure_broker: SecureMosquitto, pki: Pki, clients: list[TlsClient]
) -> None:
    pki.issue_device("dev-new", "lab")
    new = _connected(clients, _device(secure_broker, pki, "dev-new"))  # the CA signed it: it connects ...
    assert str(new.publish("edgeloop/v1/lab/dev-new/status")) == "Not authorized"  # ... but has no ACL entry yet
    secure_broker.reload()
    assert str(new.publish("edgeloop/v1/lab/dev-new/status")) == "No matching subscribers"  # accepted
    pki.revoke_device("dev-new")
    secure_broker.reload()  # Mosquitto re-reads the ACL and the CRL
    assert str(new.publish("edgeloop/v1/lab/dev-new/status")) == "Not authorized"  # still connected, allowed nothing
    moved = next((pki.root / "revoked").glob("dev-new-*"))  # the revoked bundle, kept under revoked/
    revoked = TlsClient(secure_broker.ports["device"], "x", pki.ca_cert, moved / "device.crt", moved / "device.key")
    clients.append(revoked)
    assert not revoked.connect(timeout=3)
    assert "certificate verify failed" in secure_broker.log()  # the CRL: the same certificate connected before
    assert _connected(clients, _device(secure_broker, pki, "dev-a")).connected.is_set()


def test_oversized_messages_do_not_get_through(
    secure_broker: SecureMosquitto, pki: Pki, clients: list[TlsClient]
) -> None:
    host = _connected(clients, _host(secure_broker, pki))
    host.subscribe("edgeloop/v1/#")
    a = _connected(clients, _device(secure_broker, pki, "dev-a"))
    a.client.publish("edgeloop/v1/lab/dev-a/report/event", b"x" * (2 << 20), qos=1)
    deadline = time.monotonic() + 10
    while a.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not a.connected.is_set()  # a packet over max_packet_size closes the connection
    b = _connected(clients, _device(secure_broker, pki, "dev-b"))
    b.publish("edgeloop/v1/lab/dev-b/status")
    _wait_topic(host, "edgeloop/v1/lab/dev-b/status")
    assert "edgeloop/v1/lab/dev-a/report/event" not in host.topics()


def test_the_agents_tls_settings_verify_the_broker_by_ip_and_by_name(pki: Pki, tmp_path: Path) -> None:
    """[broker.tls] of agent.toml: the broker certificate's IP SAN lets a device connect by IP; a certificate
    without that IP is refused by the device (hostname verification), however it connects by name."""
    name_only = Pki(tmp_path / "name-only")  # a broker certificate for "localhost" only
    name_only.init("localhost")
    name_only.issue_device("dev-a", "lab")
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    for broker_pki, workdir, by_ip in ((pki, tmp_path / "b1", True), (name_only, tmp_path / "b2", False)):
        broker = SecureMosquitto(broker_pki, workdir)
        broker.start()
        try:
            b = broker_pki.devices / "dev-a"
            tls = TlsConfig(ca_file=b / "ca.crt", cert_file=b / "device.crt", key_file=b / "device.key")
            port = broker.ports["device"]
            for host, expected in (("127.0.0.1", by_ip), ("localhost", True)):
                cfg = BrokerConfig(url=f"mqtts://{host}:{port}", tls=tls, reconnect_max_s=1)
                session = MqttSession(cfg.settings(), client_id="dev-a", persistent=False)
                session.start()
                try:
                    assert session.wait_connected(5 if expected else 3) is expected, (broker_pki.root, host)
                finally:
                    session.stop()
        finally:
            broker.stop()
