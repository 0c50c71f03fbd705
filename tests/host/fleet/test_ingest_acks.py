"""Live ingest against a real Mosquitto: nothing is acknowledged to the broker before it is stored, one
bad row never loses its batch, a store outage loses nothing, a dead writer thread is restarted.

The check that something was acked is the broker's: a new worker with the same client id resumes the
persistent session, and the broker redelivers exactly what the previous one had not acked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from host.fleet.ingest import Ingest, IngestWatchdog
from host.fleet.store import Store
from host.fleet.store import reports as store_reports
from host.fleet.store.reports import StoreUnavailableError
from shared import protocol as p
from shared.mqtt import BrokerSettings, Delivery, MqttSession
from tests.helpers import Mosquitto, Recorder
from tests.shared.factories import benchmark_report

pytestmark = pytest.mark.e2e


def _wait(cond: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


@pytest.fixture
def pub(mosquitto: Mosquitto) -> Iterator[Recorder]:
    rec = Recorder(mosquitto.port, "nothing/#", client_id="publisher")
    yield rec
    rec.close()


def _ingest(store: Store, mosquitto: Mosquitto, **kw: Any) -> Ingest:
    ing = Ingest(store, BrokerSettings(port=mosquitto.port), worker=kw.pop("worker", 0), shared=True, **kw)
    ing.start()
    assert ing.session.wait_connected(10)
    time.sleep(0.3)  # the subscription settles
    return ing


def _publish(pub: Recorder, reports: list[p.BenchmarkReport]) -> None:
    for r in reports:
        pub.client.publish(p.report_topic("lab", r.device_id, "benchmark"), p.encode(r), qos=1).wait_for_publish(10)


def _redelivered(store: Store, mosquitto: Mosquitto, settle_s: float = 1.5) -> Ingest:
    """A worker with the same client id: it gets what the broker still holds for the session."""
    ing = _ingest(store, mosquitto)
    time.sleep(settle_s)
    return ing


def test_one_bad_row_is_rejected_and_counted_and_the_rest_of_the_batch_stored(
    mosquitto: Mosquitto, pub: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: 100 good reports from 5 devices and one the database refuses, in one batch."""
    bad = benchmark_report("d3")
    row = store_reports._report_row

    def refused_row(fleet: str, r: p.AnyReport, received: Any, payload: str | None = None) -> dict[str, Any]:
        out = row(fleet, r, received, payload)
        return out | {"payload": None} if r.message_id == bad.message_id else out

    monkeypatch.setattr(store_reports, "_report_row", refused_row)
    store = Store(str(tmp_path / "s.sqlite"))
    ing = _ingest(store, mosquitto, flush_s=1.0)
    good = [benchmark_report(f"d{i % 5}") for i in range(100)]
    _publish(pub, [*good[:50], bad, *good[50:]])
    _wait(lambda: ing.stats.acked >= 101 and ing.drained(), what="101 acked")
    s = ing.stats
    print(f"\none bad row: received={s.received} written={s.written} rejected={s.rejected} batches={s.batches}")
    assert store.count_reports() == 100 and s.written == 100 and s.rejected == 1 and s.invalid == 0
    ing.stop()
    again = _redelivered(store, mosquitto)  # all 101 were acked: the bad one too (it is refused for good)
    assert again.stats.received == 0
    again.stop()
    store.close()


def test_nothing_is_acked_before_it_is_stored(mosquitto: Mosquitto, pub: Recorder, tmp_path: Path) -> None:
    """A worker that received reports but could not store them (the store is down) acks none: the next
    worker of the session gets them all again and stores each once."""
    store = Store(str(tmp_path / "s.sqlite"))
    down = Store(str(tmp_path / "s.sqlite"))

    def unavailable(items: object, payloads: object = None) -> None:
        raise StoreUnavailableError("the store is down")

    down.add_reports_salvaging = unavailable  # type: ignore[assignment,method-assign]
    first = _ingest(down, mosquitto)
    reports = [benchmark_report(f"d{i % 5}") for i in range(300)]
    _publish(pub, reports)
    _wait(lambda: first.stats.received == 300, what="300 received")
    time.sleep(0.6)
    assert first.stats.store_retries >= 1 and first.stats.acked == 0 and first.stats.written == 0
    first.stop(timeout=1)  # gives up on the store: nothing stored, nothing acked
    second = _ingest(store, mosquitto)
    _wait(lambda: store.count_reports() == 300, what="300 stored after redelivery")
    time.sleep(0.5)
    print(f"\nredelivered after a worker stopped with the store down: {second.stats.received} of 300")
    assert second.stats.received == 300 and second.stats.written == 300 and second.stats.duplicates == 0
    second.stop()
    store.close()


def test_a_store_outage_loses_nothing_and_rejects_nothing(mosquitto: Mosquitto, pub: Recorder, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    real, failures = store.add_reports_salvaging, [3]

    def flaky(items: Any, payloads: Any = None) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise StoreUnavailableError("database is locked")
        return real(items, payloads)

    store.add_reports_salvaging = flaky  # type: ignore[method-assign]
    ing = _ingest(store, mosquitto)
    _publish(pub, [benchmark_report(f"d{i % 5}") for i in range(200)])
    _wait(lambda: store.count_reports() == 200 and ing.drained(), what="200 stored", timeout=60)
    assert ing.stats.store_retries == 3 and ing.stats.rejected == 0 and ing.stats.acked == 200
    ing.stop()
    store.close()


def test_a_status_the_store_refuses_is_counted_and_the_reports_stored(
    mosquitto: Mosquitto, pub: Recorder, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    real = store.upsert_status

    def refuse_d9(status: p.DeviceStatus) -> None:
        if status.device_id == "d9":
            raise sa.exc.IntegrityError("INSERT ...", {}, Exception("CHECK constraint failed"))
        real(status)

    store.upsert_status = refuse_d9  # type: ignore[method-assign]
    ing = _ingest(store, mosquitto, statuses=True)
    for d in ("d1", "d9"):
        pub.publish(p.status_topic("lab", d), p.encode(p.DeviceStatus(device_id=d, fleet="lab", state="online")))
    _publish(pub, [benchmark_report("d1") for _ in range(10)])
    _wait(lambda: ing.stats.acked == 12, what="12 acked")
    assert ing.stats.rejected == 1 and ing.stats.statuses == 1 and store.count_reports() == 10
    assert [d.device_id for d in store.devices("lab")] == ["d1"]
    ing.stop()
    store.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is meant to die
def test_a_dead_writer_thread_is_restarted_and_what_it_held_is_stored(
    mosquitto: Mosquitto, pub: Recorder, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    ing = _ingest(store, mosquitto)
    flush, died = ing._flush, threading.Event()

    def buggy(items: Any) -> bool:
        if not died.is_set():
            died.set()
            ing._decode_all(items)  # validated and counted before the bug: the new writer counts nothing again
            raise RuntimeError("a bug in the writer")  # kills the writer thread, holding its batch
        return flush(items)

    ing._flush = buggy  # type: ignore[method-assign]
    watchdog = IngestWatchdog([ing])
    pub.client.publish(p.report_topic("lab", "d1", "benchmark"), b'{"kind": "benchmark"}', qos=1).wait_for_publish(10)
    _publish(pub, [benchmark_report(f"d{i % 5}") for i in range(50)])
    _wait(lambda: died.is_set() and not ing.alive(), what="the writer died")
    assert store.count_reports() == 0
    assert watchdog.check() == [0]
    _wait(lambda: store.count_reports() == 50 and ing.drained(), what="50 stored after the restart")
    assert ing.stats.restarts == 1 and ing.alive() and ing.stats.acked == 51 and ing.stats.invalid == 1
    ing.stop()
    again = _redelivered(store, mosquitto)
    assert again.stats.received == 0  # all acked
    again.stop()
    store.close()


def test_an_ack_goes_only_to_the_connection_the_message_came_on(mosquitto: Mosquitto, pub: Recorder) -> None:
    """After a reconnect the broker redelivers what was not acked, and an old packet id may name
    another message: an ack from before the reconnect is not sent."""
    got: list[Delivery] = []
    session = MqttSession(
        BrokerSettings(port=mosquitto.port),
        "acker",
        subscriptions=[("t/#", 1)],
        on_delivery=lambda topic, payload, d: got.append(d),
        receive_maximum=10,
    )
    session.start()
    assert session.wait_connected(10)
    time.sleep(0.3)
    pub.publish("t/1", b"one")
    _wait(lambda: got, what="a delivery")
    mosquitto.stop()  # the connection drops; the broker keeps the session and its unacked message
    mosquitto.start()
    _wait(lambda: len(got) == 2, what="the unacked message redelivered")
    assert got[1].connection != got[0].connection and got[1].mid == got[0].mid
    assert session.ack(got[0]) is False and session.stats.acks_stale == 1
    assert session.ack(got[1]) is True and session.stats.acks_sent == 1
    session.stop()
