"""The device agent as a real process against a real Mosquitto and a real HTTP artifact server."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore
from shared import protocol as p
from shared.protocol import ReleaseManifest
from tests.e2e.conftest import StartAgent
from tests.fixtures import MakeRelease
from tests.helpers import Mosquitto, Recorder, signed

pytestmark = pytest.mark.e2e
KEY: list[Path] = []  # the session's signing key (set by the autouse fixture below)


@pytest.fixture(autouse=True)
def _command_key(keys: tuple[Path, Path]) -> None:
    KEY[:] = [keys[0]]


FAST = p.BenchSettings(warmup=2, iterations=20, throughput_batch=16, throughput_rounds=2, eval_limit=50)


def _wait_status(rec: Recorder, state: str, timeout: float = 30) -> p.DeviceStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in reversed(rec.topics("/status")):
            s = p.decode_status(raw)
            if s.state == state:
                return s
        time.sleep(0.1)
    raise TimeoutError(f"no status {state!r}")


def _deploy(rec: Recorder, m: ReleaseManifest, served: str, device: str = "dev-1", **kw: object) -> p.DeployCommand:
    cmd = p.DeployCommand(device_id=device, manifest=m, base_url=served, rollout_id="r1", bench=FAST, **kw)
    rec.publish(p.command_topic("lab", device), signed(cmd, KEY[0]))
    return cmd


def _reports(rec: Recorder, kind: str) -> list[p.AnyReport]:
    return [p.decode_report(raw) for raw in rec.topics(f"/report/{kind}")]


def test_deploy_builds_benchmarks_reports_and_last_will(
    mosquitto: Mosquitto, start_agent: StartAgent, zoo_onnx: Path, make_release: MakeRelease, served: str
) -> None:
    rec = Recorder(mosquitto.port)
    agent = start_agent()
    online = _wait_status(rec, "online")
    assert online.release is None and online.runtime is None
    m = make_release(zoo_onnx)
    cmd = _deploy(rec, m, served)
    rec.wait_for("/report/benchmark", timeout=120)
    dep = _reports(rec, "deploy")[0]
    assert isinstance(dep, p.DeployReport)
    assert dep.ok and dep.release == m.ref and dep.command_id == cmd.message_id and dep.rollout_id == "r1"
    assert dep.runtime == "onnxruntime" and dep.selftest_top1 is not None and dep.selftest_top1 > 0.5
    bench = _reports(rec, "benchmark")[0]
    assert isinstance(bench, p.BenchmarkReport)
    assert bench.release == m.ref and bench.n_images == 50 and bench.top1 is not None
    assert bench.latency_ms.p99 >= bench.latency_ms.p50 > 0 and bench.raw_throughput_ips > 0
    assert bench.system is not None and bench.system.gpu_load_percent is None
    status = _wait_status(rec, "online")
    deadline = time.monotonic() + 10
    while status.release is None and time.monotonic() < deadline:
        status = _wait_status(rec, "online")
    assert status.release == m.ref
    agent.kill()  # SIGKILL: no clean disconnect, so the broker publishes the Last Will
    offline = _wait_status(rec, "offline", timeout=90)
    assert offline.device_id == "dev-1"
    late = Recorder(mosquitto.port, client_id="late-joiner")  # retained: a new subscriber sees offline too
    late.wait_for("/status")
    assert p.decode_status(late.topics("/status")[-1]).state == "offline"
    rec.close()
    late.close()


@pytest.mark.security
def test_bad_input_gives_events_and_the_agent_keeps_running(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    make_release: MakeRelease,
    served: str,
    resign: Callable[[ReleaseManifest], ReleaseManifest],
    store: ReleaseStore,
) -> None:
    rec = Recorder(mosquitto.port)
    agent = start_agent()
    _wait_status(rec, "online")
    good = make_release(zoo_onnx)
    _deploy(rec, good, served)
    rec.wait_for("/report/benchmark", timeout=120)
    topic = p.command_topic("lab", "dev-1")
    rec.publish(topic, b"{this is not json")
    rec.publish(topic, b'{"kind": "deploy", "device_id": "dev-1"}')
    art = good.artifacts[0]
    bad_sha = resign(
        good.model_copy(update={"version": "1.1.0", "artifacts": (art.model_copy(update={"sha256": "0" * 64}),)})
    )
    truncated = resign(
        good.model_copy(update={"version": "1.2.0", "artifacts": (art.model_copy(update={"size": art.size + 7}),)})
    )
    garbage = b"\x08\x07not an onnx graph" * 500  # served intact, signed, right sha256: only the build fails
    digest = hashlib.sha256(garbage).hexdigest()
    (store.artifacts / f"{digest}.onnx").write_bytes(garbage)
    corrupt_art = art.model_copy(update={"sha256": digest, "size": len(garbage), "url": f"artifacts/{digest}.onnx"})
    corrupt = resign(good.model_copy(update={"version": "1.3.0", "artifacts": (corrupt_art,)}))
    _deploy(rec, bad_sha, served)
    _deploy(rec, truncated, served)
    _deploy(rec, corrupt, served)
    events = rec.wait_for("/report/event", count=5, timeout=120)
    codes = [p.decode_report(e).code for e in events]  # type: ignore[union-attr]
    assert codes.count("malformed_command") == 2
    assert "artifact_sha256_mismatch" in codes and "artifact_truncated" in codes
    assert "onnx_rejected" in codes  # a corrupt ONNX is refused before any build
    failed = [r for r in _reports(rec, "deploy") if isinstance(r, p.DeployReport) and not r.ok]
    assert {r.release.version for r in failed} == {"1.1.0", "1.2.0", "1.3.0"}
    # still alive, still running the good release: a benchmark command is answered for it
    rec.publish(topic, signed(p.BenchmarkCommand(device_id="dev-1", bench=FAST), KEY[0]))
    rec.wait_for("/report/benchmark", count=2, timeout=120)
    assert _reports(rec, "benchmark")[-1].release == good.ref
    assert agent.alive
    assert agent.terminate() == 0
    rec.close()


def test_outbox_delivers_reports_made_while_the_broker_was_down(
    mosquitto: Mosquitto, start_agent: StartAgent, zoo_onnx: Path, make_release: MakeRelease, served: str
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="host-ingest-test", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    sub.on_connect = lambda c, u, f, rc, pr: c.subscribe("edgeloop/v1/+/+/report/benchmark", 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600  # persistent: the broker queues reports while we are away
    sub.reconnect_delay_set(1, 2)
    sub.connect("127.0.0.1", mosquitto.port, clean_start=False, properties=props)
    sub.loop_start()
    rec = Recorder(mosquitto.port)
    agent = start_agent()
    _wait_status(rec, "online")
    _deploy(rec, make_release(zoo_onnx), served)
    rec.wait_for("/report/benchmark", timeout=120)
    slow = p.BenchSettings(warmup=2, iterations=400, throughput_batch=16, evaluate=False)
    commands = [p.BenchmarkCommand(device_id="dev-1", bench=slow) for _ in range(4)]
    for c in commands:
        rec.publish(p.command_topic("lab", "dev-1"), signed(c, KEY[0]))
    rec.close()
    time.sleep(0.5)
    mosquitto.stop()  # the agent keeps working through its queue with no broker
    time.sleep(8)
    mosquitto.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ids = {getattr(p.decode_report(r), "command_id", None) for r in got}
        if all(c.message_id in ids for c in commands):
            break
        time.sleep(0.2)
    reports = [p.decode_report(r) for r in got]
    by_command = {
        c.message_id: [r for r in reports if getattr(r, "command_id", None) == c.message_id] for c in commands
    }
    assert all(len({r.message_id for r in rs}) == 1 for rs in by_command.values()), by_command
    assert agent.alive
    sub.loop_stop()
    sub.disconnect()


def test_sample_command_uploads_field_images(mosquitto: Mosquitto, start_agent: StartAgent) -> None:
    import http.server
    import threading

    received: list[tuple[str, str, bytes]] = []

    class Upload(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["X-Edgeloop-Device"], self.headers["X-Edgeloop-Fleet"], body))
            self.send_response(201)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upload)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec = Recorder(mosquitto.port)
    start_agent()
    _wait_status(rec, "online")
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/upload"
    rec.publish(
        p.command_topic("lab", "dev-1"), signed(p.SampleCommand(device_id="dev-1", n_images=5, upload_url=url), KEY[0])
    )
    events = rec.wait_for("/report/event", timeout=60)
    ev = p.decode_report(events[-1])
    assert isinstance(ev, p.EventReport) and ev.code == "samples_uploaded"
    assert len(received) == 5 and all(
        d == "dev-1" and f == "lab" and body[:2] == b"\xff\xd8" for d, f, body in received
    )
    server.shutdown()
    rec.close()
