"""`edgeloop fleet sample`: the host asks a device for field images and brings them back.

The device side is the agent's own ``sample`` handler (device/commands/sample.py), fed from the
embedded broker: it uploads what it finds the way a daemon does, and reports the same events.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from device.commands.sample import SampleHandler
from host.fleet.client import ApiClient
from host.fleet.server import HostServer
from shared import imaging
from shared import protocol as p
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, MqttSession
from shared.protocol import ReleaseManifest
from tests.helpers import REPO


class FakeAgent:
    """Just what ``SampleHandler`` uses of the agent, answering commands from the broker like the daemon."""

    def __init__(self, broker_port: int, field_dir: Path, device: str = "dev-1", fleet: str = "lab") -> None:
        self.device_id, self.fleet, self.serving = device, fleet, None
        self.config = SimpleNamespace(
            field_dir=field_dir, eval_dir=None, http_timeout_s=10.0, upload_credential=lambda: None
        )
        self.commands: queue.Queue[bytes | None] = queue.Queue()
        self.session = MqttSession(
            BrokerSettings(port=broker_port, protocol="3.1.1"),
            client_id=f"fake-{device}",
            subscriptions=[(p.command_topic(fleet, device), 1)],
            on_message=lambda topic, payload: self.commands.put(payload),
        )
        self.worker = threading.Thread(target=self._work, daemon=True)

    def __enter__(self) -> FakeAgent:
        self.session.start()
        assert self.session.wait_connected(10)
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.commands.put(None)
        self.worker.join(10)
        self.session.stop()

    def _work(self) -> None:
        while (payload := self.commands.get()) is not None:
            cmd = p.decode_command(payload)
            assert isinstance(cmd, p.SampleCommand)
            try:
                SampleHandler().handle(cast(Any, self), cmd)
            except EdgeloopError as e:  # what the daemon does with a failed command
                self.event("error", "command_failed", str(e), command_id=cmd.message_id)

    def event(self, level: str, code: str, message: str, **kw: Any) -> None:
        report = p.EventReport(device_id=self.device_id, level=level, code=code, message=message, **kw)
        self.session.publish(p.report_topic(self.fleet, self.device_id, "event"), p.encode(report))


def _cli(server: HostServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host.cli", "fleet", "sample", *args, "--server", server.config.base_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def host(server: tuple[HostServer, ReleaseManifest]) -> Iterator[HostServer]:
    srv, _ = server
    srv.store.upsert_status(p.DeviceStatus(device_id="dev-1", fleet="lab", state="online"))
    srv.store.upsert_status(p.DeviceStatus(device_id="dev-2", fleet="lab", state="offline"))
    yield srv


def _field(tmp_path: Path, golden_dir: Path, n: int) -> Path:
    d = tmp_path / "field"
    d.mkdir()
    for f in sorted(golden_dir.rglob("*.jpg"))[:n]:
        shutil.copy(f, d / f"{f.parent.name}-{f.name}")
    return d


def test_fleet_sample_brings_back_field_images(host: HostServer, golden_dir: Path, tmp_path: Path) -> None:
    field = _field(tmp_path, golden_dir, 8)
    assert host.broker is not None
    with FakeAgent(host.broker.port, field):
        done = _cli(host, "dev-1", "--n", "5", "--out", str(tmp_path / "out"), "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert (result["fleet"], result["requested"], result["received"]) == ("lab", 5, 5)
        files = sorted((tmp_path / "out").iterdir())
        assert [f.name for f in files] == [f"{i:04d}.jpg" for i in range(5)]
        originals = {f.read_bytes() for f in field.iterdir()}
        assert all(f.read_bytes() in originals for f in files)  # the device's images, byte for byte
        assert all(imaging.decode(f.read_bytes()).shape == (32, 32, 3) for f in files)
        # a device with fewer images than asked for sends what it has, and says it is done
        done = _cli(host, "dev-1", "--fleet", "lab", "--n", "20", "--out", str(tmp_path / "all"))
        assert done.returncode == 0, done.stderr
        assert "8 of 20 field images from lab/dev-1" in done.stdout and len(list((tmp_path / "all").iterdir())) == 8
    api = ApiClient(host.config.base_url)
    state = api.get(f"/api/v1/devices/lab/dev-1/samples/{result['command_id']}")
    assert state["done"] and state["received"] == 5 and state["events"][0]["code"] == "samples_uploaded"


def test_fleet_sample_errors_are_clear(host: HostServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert host.broker is not None
    with FakeAgent(host.broker.port, empty):
        failed = _cli(host, "dev-1", "--n", "2", "--out", str(tmp_path / "o"))
    assert failed.returncode == 2 and "no field images under" in failed.stderr
    unknown = _cli(host, "dev-9", "--n", "2", "--out", str(tmp_path / "o"))
    assert unknown.returncode == 2 and "knows no device 'dev-9'" in unknown.stderr
    offline = _cli(host, "dev-2", "--n", "2", "--out", str(tmp_path / "o"))
    assert offline.returncode == 2 and "offline" in offline.stderr
    silent = _cli(host, "dev-1", "--n", "2", "--out", str(tmp_path / "o"), "--timeout", "1")  # nobody answers
    assert silent.returncode == 2 and "timed out after 1 s with 0 of 2" in silent.stderr
    too_many = _cli(host, "dev-1", "--n", "1001", "--out", str(tmp_path / "o"))
    assert too_many.returncode == 2 and "--n must be 1 to 1000" in too_many.stderr


@pytest.mark.security
def test_sample_api_checks_its_input(host: HostServer) -> None:
    api = ApiClient(host.config.base_url)
    with pytest.raises(EdgeloopError, match="HTTP 422"):
        api.post("/api/v1/devices/lab/dev-1/samples", {"n_images": 0})
    with pytest.raises(EdgeloopError, match="HTTP 404"):
        api.post("/api/v1/devices/lab/nobody/samples", {"n_images": 1})
    asked = api.post("/api/v1/devices/lab/dev-1/samples", {"n_images": 2})
    cid = asked["command_id"]
    assert asked["upload_url"] == f"{host.config.base_url}api/v1/upload?command={cid}"
    assert api.get(f"/api/v1/devices/lab/dev-1/samples/{cid}")["files"] == []
    for bad in (f"/api/v1/devices/lab/dev-2/samples/{cid}", "/api/v1/devices/lab/dev-1/samples/not-a-uuid"):
        with pytest.raises(EdgeloopError, match=r"HTTP 40[04]"):
            api.get(bad)
    for name in ("request.json", "..%2F..%2Fh.sqlite", "0000.jpg"):
        with pytest.raises(EdgeloopError, match="HTTP 404"):
            api.get_bytes(f"/api/v1/devices/lab/dev-1/samples/{cid}/{name}")
    with pytest.raises(EdgeloopError, match="HTTP 422"):
        api.get(f"/api/v1/devices/lab/a.b/samples/{cid}")


@pytest.mark.security
def test_a_device_of_another_fleet_cannot_end_a_sample_request(host: HostServer) -> None:
    """Events count for a sample request only from the device, of the fleet, it went to (issue 22)."""
    api = ApiClient(host.config.base_url)
    cid = api.post("/api/v1/devices/lab/dev-1/samples", {"n_images": 2})["command_id"]
    forged = [  # the same device id in another fleet, and another device of the same fleet
        ("other", p.EventReport(device_id="dev-1", level="error", code="command_failed", message="forged",
                                command_id=cid)),
        ("lab", p.EventReport(device_id="dev-2", level="info", code="samples_uploaded", message="forged",
                              command_id=cid)),
    ]  # fmt: skip
    host.store.add_reports(forged)
    state = api.get(f"/api/v1/devices/lab/dev-1/samples/{cid}")
    assert (state["done"], state["error"], state["events"]) == (False, None, []), state
