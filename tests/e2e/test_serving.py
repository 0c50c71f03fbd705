"""The agent serves its engine while it works: a real agent process, a real Mosquitto, real HTTP load."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from device.engine.loadgen import loadgen
from shared import protocol as p
from tests.e2e.conftest import StartAgent
from tests.fixtures import MakeRelease
from tests.helpers import REPO, Mosquitto, Recorder, free_port, signed

pytestmark = pytest.mark.e2e
KEY: list[Path] = []  # the session's signing key (set by the autouse fixture below)


@pytest.fixture(autouse=True)
def _command_key(keys: tuple[Path, Path]) -> None:
    KEY[:] = [keys[0]]


FAST = p.BenchSettings(warmup=2, iterations=20, throughput_batch=16, throughput_rounds=1, eval_limit=50)
SLIM = REPO / "host" / "zoo" / "resnet20-slim.onnx"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _wait(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := fn():
            return v
        time.sleep(0.2)
    raise TimeoutError(what)


def _classify(url: str, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(url + "/v1/classify", data=body, headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(req, timeout=10) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def test_an_engine_swap_under_load_fails_no_request(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    make_release: MakeRelease,
    served: str,
    golden_dir: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = start_agent(extra=f'[inference]\nlisten = "127.0.0.1:{port}"\ntelemetry_interval_s = 2\n')
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    old, new = make_release(zoo_onnx, "1.0.0"), make_release(SLIM, "1.1.0")
    rec.publish(
        p.command_topic("lab", "dev-1"),
        signed(p.DeployCommand(device_id="dev-1", manifest=old, base_url=served, bench=FAST), KEY[0]),
    )
    _wait(lambda: _healthy(url), 120, "the agent serving 1.0.0")
    result: dict[str, Any] = {}
    load = threading.Thread(target=lambda: result.update(loadgen(url, golden_dir, concurrency=8, duration=20)))
    load.start()
    time.sleep(4)
    rec.publish(
        p.command_topic("lab", "dev-1"),
        signed(p.DeployCommand(device_id="dev-1", manifest=new, base_url=served, bench=FAST), KEY[0]),
    )
    load.join(60)
    jpeg = next(golden_dir.rglob("*.jpg")).read_bytes()
    after = _classify(url, jpeg)
    telemetry = [p.decode_report(raw) for raw in rec.topics("/report/telemetry")]
    rec.close()
    assert agent.alive
    assert result["errors"] == 0, result
    assert result["releases"].get(str(old.ref), 0) > 0 and result["releases"].get(str(new.ref), 0) > 0, result
    assert after["release"] == str(new.ref)
    served_reports = [t for t in telemetry if isinstance(t, p.TelemetryReport) and t.requests > 0]
    assert served_reports and all(t.latency_ms is not None for t in served_reports)
    assert {str(t.release) for t in served_reports} >= {str(new.ref)}
    assert sum(t.requests for t in served_reports) <= result["requests"] + 1
