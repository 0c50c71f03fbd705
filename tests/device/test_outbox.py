from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.outbox import Outbox, OutboxPump
from shared.mqtt import BrokerSettings, MqttSession
from tests.helpers import Mosquitto


def test_order_ack_and_persistence(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    ids = [box.put(f"t/{i}", f"p{i}".encode(), f"m{i}") for i in range(5)]
    assert [e.topic for e in box.pending()] == [f"t/{i}" for i in range(5)]
    assert [e.id for e in box.pending(after_id=ids[1], limit=2)] == ids[2:4]
    box.ack(ids[0])
    box.ack(ids[3])
    box.close()
    again = Outbox(tmp_path / "o.sqlite")  # a restarted agent sees what was never acknowledged
    assert [e.message_id for e in again.pending()] == ["m1", "m2", "m4"]
    assert len(again) == 3


def test_command_dedup_survives_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert box.first_time("a") is True
    assert box.first_time("a") is False
    box.close()
    assert Outbox(tmp_path / "o.sqlite").first_time("a") is False


def test_a_repeated_command_is_answered_with_the_reports_that_answered_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    first = box.put("r/deploy", b"dep", "m-dep", answers="cmd-1")
    box.put("r/benchmark", b"bench", "m-bench", answers="cmd-1")
    box.put("r/telemetry", b"tel", "m-tel")  # answers nothing
    assert box.answer_again("cmd-2") == 0  # nothing answered that command (yet)
    for e in box.pending():
        box.ack(e.id)  # the broker took them all, and then lost some
    box.close()
    box = Outbox(tmp_path / "o.sqlite")  # kept across a restart, as the command ids are
    assert box.answer_again("cmd-1") == 2
    again = box.pending()
    assert [(e.topic, e.payload, e.message_id) for e in again] == [
        ("r/deploy", b"dep", "m-dep"),
        ("r/benchmark", b"bench", "m-bench"),
    ]
    assert all(e.id > first for e in again)


def _shared_subscriber(port: int, got: list[bytes]) -> mqtt.Client:
    """A persistent session with a shared subscription, as the host's ingest has."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ingest-like", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("$share/g/edgeloop/v1/+/+/report/#", 1)
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    return client


def _until(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.mark.e2e
def test_a_report_the_broker_routed_to_nobody_is_kept_and_sent_again(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Mosquitto 2.0, just restarted, PUBACKs "No matching subscribers" and drops a report that only the
    persisted shared subscription of a not yet reconnected ingest matches: the outbox keeps it."""
    got: list[bytes] = []
    sub = _shared_subscriber(mosquitto.port, got)
    time.sleep(0.5)  # subscribed
    sub.disconnect()
    sub.loop_stop()
    mosquitto.stop()
    mosquitto.start()  # the ingest's session (and its shared subscription) restored from persistence
    box = Outbox(tmp_path / "o.sqlite")
    session = MqttSession(BrokerSettings(port=mosquitto.port), client_id="dev-x")
    pump = OutboxPump(box, session, unrouted_retry_s=0.5)
    session.start()
    pump.start()
    try:
        assert session.wait_connected(10)
        box.put("edgeloop/v1/lab/dev-x/report/benchmark", b"r1", "m1")
        _until(lambda: pump.unrouted >= 1, 10, "a PUBACK saying nobody subscribed")
        assert len(box) == 1 and session.stats.unrouted >= 1
        sub = _shared_subscriber(mosquitto.port, got)  # the ingest reconnects
        _until(lambda: len(box) == 0, 15, "the report delivered and deleted")
        _until(lambda: got, 5, "the report received")
        assert set(got) == {b"r1"}
    finally:
        pump.stop()
        session.stop()
        sub.disconnect()
        sub.loop_stop()
