"""Fuzzing with hypothesis: 10,000 hostile payloads each to a live agent and to live ingest, over a
real Mosquitto. Nothing crashes, no thread is lost, nothing invalid is stored, every rejection is
counted, and the good messages interleaved with the bad ones all get through.

Seeded (``derandomize``): CI runs the same 10,000 payloads every time.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from host.fleet.ingest import Ingest
from host.fleet.store import Store
from shared import protocol as p
from shared.mqtt import BrokerSettings
from tests.e2e.conftest import StartAgent
from tests.helpers import Mosquitto, Recorder, signed
from tests.security.strategies import hostile
from tests.shared.factories import benchmark_report, manifest

pytestmark = [pytest.mark.e2e, pytest.mark.security]

N = 10_000
FUZZ = settings(max_examples=N, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


def _status(rec: Recorder) -> p.DeviceStatus:
    return p.decode_status(rec.topics("/status")[-1])


def test_a_live_agent_survives_10000_hostile_commands(
    mosquitto: Mosquitto, start_agent: StartAgent, keys: tuple[Path, Path]
) -> None:
    agent = start_agent()
    rec = Recorder(mosquitto.port, topic_filter="edgeloop/v1/lab/dev-1/status")
    rec.wait_online()
    valid = [
        signed(p.BenchmarkCommand(device_id="dev-1"), keys[0]),
        signed(p.DeployCommand(device_id="dev-1", manifest=manifest(), base_url="http://127.0.0.1:9/"), keys[0]),
        signed(p.RollbackCommand(device_id="dev-1"), keys[0]),
        signed(p.SampleCommand(device_id="dev-1", upload_url="http://127.0.0.1:9/u"), keys[0]),
        signed(p.RecalibrateCommand(device_id="dev-1"), keys[0]),
    ]
    topic = p.command_topic("lab", "dev-1")
    sent = [0]

    @FUZZ
    @given(payload=hostile(valid))
    def send(payload: bytes) -> None:
        rec.client.publish(topic, payload, qos=1)
        sent[0] += 1
        if sent[0] % 500 == 0:  # let the broker and the agent breathe: this is a fuzz test, not a flood
            time.sleep(0.2)

    send()
    assert sent[0] == N
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        c = _status(rec).commands
        if c is not None and c.received >= N and c.queued == 0 and c.rejected + c.duplicates + c.handled == N:
            break
        time.sleep(1)
    s = _status(rec)
    assert agent.alive and s.commands is not None
    c = s.commands
    print(f"fuzz agent: sent {sent[0]}, received {c.received}, rejected {c.rejected}, duplicates {c.duplicates}, "
          f"handled {c.handled}, watchdog restarts {s.watchdog_restarts}")  # fmt: skip
    assert c.received == N and c.rejected + c.duplicates + c.handled == N, c  # each payload accounted for once
    assert c.rejected > N * 0.9, c  # almost all refused; the rest were valid commands the mutations left intact
    assert s.watchdog_restarts == 0
    good = p.RollbackCommand(device_id="dev-1")  # answered (no release to roll back to): the worker lives
    events = Recorder(mosquitto.port, topic_filter="edgeloop/v1/lab/dev-1/report/event", client_id="events")
    rec.publish(topic, signed(good, keys[0]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [p.decode_report(e) for e in events.topics("/report/event")]
        if any(getattr(e, "command_id", None) == good.message_id for e in got):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the agent did not answer a good command after the fuzzing")
    events.close()
    rec.close()


def _classify(payload: bytes) -> p.AnyReport | None:
    """What ingest must make of a payload on d1's report topics: the report, or None (invalid)."""
    try:
        report = p.decode_report(payload)
    except p.ProtocolError:
        return None
    return report if report.device_id == "d1" else None


def test_live_ingest_stores_every_good_report_and_no_bad_one(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "h.sqlite"))
    ingest = Ingest(store, BrokerSettings.from_url(mosquitto.url), shared=False)
    ingest.start()
    assert ingest.session.wait_connected(10)
    pub = Recorder(mosquitto.port, topic_filter="nothing/#", client_id="fuzzer")
    valid = [
        p.encode(benchmark_report("d1")),
        p.encode(p.EventReport(device_id="d1", level="info", code="x", message="m")),
    ]
    good: set[str] = set()  # message ids ingest must store
    counts = {"sent": 0, "invalid": 0, "valid": 0}

    def publish(payload: bytes, report: p.AnyReport | None) -> None:
        kind = report.kind if report is not None else "benchmark"
        pub.client.publish(p.report_topic("lab", "d1", kind), payload, qos=1)
        counts["sent"] += 1
        if report is None:
            counts["invalid"] += 1
        else:
            counts["valid"] += 1
            good.add(str(report.message_id))

    @FUZZ
    @given(payload=hostile(valid))
    def send(payload: bytes) -> None:
        if counts["sent"] % 20 == 0:  # a good report every 20 messages, with a message id of its own
            r = benchmark_report("d1", message_id=uuid.uuid4())
            publish(p.encode(r), r)
        publish(payload, _classify(payload))

    send()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and ingest.stats.received < counts["sent"]:
        time.sleep(0.5)
    time.sleep(1)  # the writer's last batch
    ingest.stop()
    pub.close()
    s = ingest.stats
    print(f"fuzz ingest: sent {counts['sent']} ({counts['invalid']} invalid, {counts['valid']} valid), received "
          f"{s.received}, invalid counted {s.invalid}, written {s.written}, duplicates {s.duplicates}")  # fmt: skip
    assert s.received == counts["sent"] and counts["invalid"] > N * 0.8, counts
    assert s.invalid == counts["invalid"], (s, counts)  # every rejection counted
    assert s.written + s.duplicates == counts["valid"]
    assert store.count_reports() + store.count_telemetry() == len(good) == s.written  # nothing else stored
    store.close()
