from __future__ import annotations

import time
from pathlib import Path

import pytest

from host.fleet.ingest import Ingest
from host.fleet.store import Store
from shared import protocol as p
from shared.mqtt import BrokerSettings
from tests.helpers import Mosquitto, Recorder
from tests.host.fleet.factories import telemetry_report
from tests.shared.factories import benchmark_report

pytestmark = pytest.mark.e2e


def _wait(cond: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError


def test_two_workers_share_the_subscription_and_store_each_report_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    broker = BrokerSettings(port=mosquitto.port)
    workers = [Ingest(store, broker, worker=i, shared=True, statuses=(i == 0), track_ids=True) for i in range(2)]
    for w in workers:
        w.start()
        assert w.session.wait_connected(10)
    time.sleep(0.5)  # subscriptions settle
    pub = Recorder(mosquitto.port, "nothing/#", client_id="publisher")
    reports = [benchmark_report(f"d{i % 7}") for i in range(600)]
    for r in reports:
        pub.client.publish(p.report_topic("lab", r.device_id, "benchmark"), p.encode(r), qos=1)
    for r in reports[:50]:  # redelivery of the same reports (e.g. an agent's outbox after reconnect)
        pub.client.publish(p.report_topic("lab", r.device_id, "benchmark"), p.encode(r), qos=1)
    pub.client.publish(p.report_topic("lab", "d1", "benchmark"), b'{"kind": "benchmark"}', qos=1)  # invalid
    liar = p.encode(benchmark_report("d1"))
    pub.client.publish(p.report_topic("lab", "other", "benchmark"), liar, qos=1)  # topic and payload disagree
    _wait(lambda: sum(w.stats.received for w in workers) >= 652 and all(w.drained() for w in workers))
    time.sleep(0.3)
    a, b = (w.stats.seen_ids or set() for w in workers)
    assert a and b, "both workers took a share"
    assert store.count_reports() == 600  # every report once, duplicates and invalid ones dropped
    assert sum(w.stats.invalid for w in workers) == 2
    assert sum(w.stats.written for w in workers) == 600
    for w in workers:
        w.stop()
    pub.close()
    store.close()


def test_single_worker_on_the_embedded_broker(tmp_path: Path) -> None:
    from host.fleet.broker import EmbeddedBroker
    from tests.helpers import free_port

    broker = EmbeddedBroker(port=free_port())
    broker.start()
    try:
        store = Store(str(tmp_path / "s.sqlite"))
        settings = BrokerSettings(port=broker.port, protocol="3.1.1")
        ing = Ingest(store, settings, shared=False)
        ing.start()
        assert ing.session.wait_connected(10)
        time.sleep(0.3)
        from shared.mqtt import MqttSession

        dev = MqttSession(settings, "dev-x")
        dev.start()
        assert dev.wait_connected(10)
        dev.publish(
            p.status_topic("lab", "dev-x"), p.encode(p.DeviceStatus(device_id="dev-x", fleet="lab", state="online"))
        )
        for _ in range(20):
            dev.publish(p.report_topic("lab", "dev-x", "benchmark"), p.encode(benchmark_report("dev-x")))
        _wait(lambda: store.count_reports() == 20 and store.devices("lab"))
        assert store.devices("lab")[0].state == "online"
        dev.stop()
        ing.stop()
        store.close()
    finally:
        broker.stop()


def test_a_worker_process_shares_the_subscription_with_an_in_process_worker(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """`serve --ingest-workers 2`: worker 1 runs in a child process; its counters come back to the parent."""
    from host.fleet.ingest import IngestProcess

    url = str(tmp_path / "s.sqlite")
    store = Store(url)
    broker = BrokerSettings(port=mosquitto.port)
    local = Ingest(store, broker, worker=0, shared=True)
    child = IngestProcess(url, broker, worker=1, shared=True, statuses=False)
    local.start()
    child.start()
    assert local.session.wait_connected(10)
    time.sleep(0.5)
    pub = Recorder(mosquitto.port, "nothing/#", client_id="publisher")
    reports = [benchmark_report(f"d{i % 5}") for i in range(400)]
    for r in reports + reports[:20]:
        pub.client.publish(p.report_topic("lab", r.device_id, "benchmark"), p.encode(r), qos=1)
    _wait(lambda: local.stats.written + child.stats.written + local.stats.duplicates + child.stats.duplicates >= 420)
    assert child.alive()
    assert child.stats.written > 0 and local.stats.written > 0, "both workers took a share"
    assert local.stats.written + child.stats.written == 400
    assert store.count_reports() == 400
    child.stop()
    assert not child.alive()
    local.stop()
    pub.close()
    store.close()


def test_telemetry_reports_are_ingested_once_with_the_other_reports(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    ing = Ingest(store, BrokerSettings(port=mosquitto.port), shared=True)
    ing.start()
    assert ing.session.wait_connected(10)
    time.sleep(0.5)
    pub = Recorder(mosquitto.port, "nothing/#", client_id="publisher")
    served = [telemetry_report(f"d{i % 3}", requests=10) for i in range(30)]
    for r in served + served[:5]:  # an outbox re-sends some
        pub.client.publish(p.report_topic("lab", r.device_id, "telemetry"), p.encode(r), qos=1)
    pub.client.publish(p.report_topic("lab", "d0", "benchmark"), p.encode(benchmark_report("d0")), qos=1)
    wrong = p.encode(telemetry_report("d1"))
    pub.client.publish(p.report_topic("lab", "d1", "benchmark"), wrong, qos=1)  # kind and topic disagree
    _wait(lambda: ing.stats.received >= 37 and ing.drained())
    time.sleep(0.3)
    assert store.count_telemetry("lab") == 30 and store.count_reports("benchmark") == 1
    assert ing.stats.written == 31 and ing.stats.duplicates == 5 and ing.stats.invalid == 1
    assert store.served_totals("lab")[("lab", "d0")]["requests"] == 100
    ing.stop()
    pub.close()
    store.close()


def test_a_report_is_stored_with_the_json_it_came_as(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Ingest hands the store each report's payload as received: it is not encoded again."""
    import sqlalchemy as sa

    from host.fleet.store.schema import reports

    store = Store(str(tmp_path / "s.sqlite"))
    ing = Ingest(store, BrokerSettings(port=mosquitto.port), shared=True)
    ing.start()
    assert ing.session.wait_connected(10)
    time.sleep(0.5)
    pub = Recorder(mosquitto.port, "nothing/#", client_id="publisher")
    sent = benchmark_report("d1")
    raw = b'{ "kind": "benchmark",\n  ' + p.encode(sent)[1:]  # a layout of the device's own
    pub.client.publish(p.report_topic("lab", "d1", "benchmark"), raw, qos=1)
    _wait(lambda: ing.stats.written == 1 and ing.drained())
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(reports.c.payload)).scalar_one() == raw.decode()
    assert store.count_reports("benchmark") == 1 and store.latest_benchmarks("lab")[("lab", "d1")].top1 == sent.top1
    ing.stop()
    pub.close()
    store.close()
