"""`edgeloop recalibrate` and its REST API against `edgeloop serve` in this process (embedded broker).

A scripted device answers each recalibrate command with the CalibrationReport a real agent would
send (the e2e tests run the real one): the host must store the command before it publishes it,
follow its state to the answer, promote only what a device kept, and serve the sets it packs.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device.commands.calibration_sources import download_set
from host.fleet.client import ApiClient
from host.fleet.recalibration import CalibrationSets, RecalibrateRequest, RecalibrationError, Recalibrations
from host.fleet.server import HostServer
from host.fleet.store import Store
from shared import protocol as p
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, MqttSession
from shared.protocol import ReleaseManifest
from tests.helpers import REPO
from tests.host.fleet.factories import REF, calibration_report
from tests.host.fleet.test_records import CALIBRATION_FLAG_KEYS

RECALIBRATION_KEYS = ["id", "fleet", "device_id", "action", "state", "promote", "calibration_id", "release",
                      "options", "published", "created_at", "promoted_by", "error", "outcome"]  # fmt: skip
Answer = Callable[[p.RecalibrateCommand], p.CalibrationReport | p.EventReport]


def good(cmd: p.RecalibrateCommand) -> p.CalibrationReport:
    """What an agent sends when the new engine is better: promoted under auto, kept under manual."""
    n = len(download_set(str(cmd.calib_url), cmd_dir(cmd), 1 << 24, 10)) if cmd.source == "url" else 150
    if cmd.action == "promote":
        return calibration_report(cmd.device_id, command_id=cmd.message_id, action="promote", n_images=0,
                                  evaluation="none", top1_before=None, top1_after=None)  # fmt: skip
    return calibration_report(cmd.device_id, command_id=cmd.message_id, n_images=n, promoted=cmd.promote,
                              source=cmd.source)  # fmt: skip


DOWNLOADS: dict[str, Path] = {}


def cmd_dir(cmd: p.RecalibrateCommand) -> Path:
    d = DOWNLOADS["root"] / str(cmd.message_id)
    d.mkdir(parents=True)
    return d


class ScriptedDevice:
    """Answers recalibrate commands from the broker the way the agent's handler reports."""

    def __init__(self, broker_port: int, answer: Answer = good, device: str = "dev-1", fleet: str = "lab") -> None:
        self.device_id, self.fleet, self.answer = device, fleet, answer
        self.commands: queue.Queue[bytes | None] = queue.Queue()
        self.seen: list[p.RecalibrateCommand] = []
        self.session = MqttSession(
            BrokerSettings(port=broker_port, protocol="3.1.1"),
            client_id=f"scripted-{device}",
            subscriptions=[(p.command_topic(fleet, device), 1)],
            on_message=lambda topic, payload: self.commands.put(payload),
        )
        self.worker = threading.Thread(target=self._work, daemon=True)

    def __enter__(self) -> ScriptedDevice:
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
            assert isinstance(cmd, p.RecalibrateCommand)
            self.seen.append(cmd)
            report = self.answer(cmd)
            self.session.publish(p.report_topic(self.fleet, self.device_id, report.kind), p.encode(report), qos=1)


@pytest.fixture
def host(server: tuple[HostServer, ReleaseManifest], tmp_path: Path) -> Iterator[HostServer]:
    srv, _ = server
    DOWNLOADS["root"] = tmp_path / "downloads"
    for device, state, release in (("dev-1", "online", REF), ("dev-2", "offline", REF), ("dev-3", "online", None)):
        srv.store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state=state, release=release))
    yield srv


def _done(api: ApiClient, cid: str, timeout: float = 30) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r: dict[str, Any] = api.get(f"/api/v1/recalibrations/{cid}")
        if r["state"] not in ("sent", "unsent"):
            return r
        time.sleep(0.1)
    raise TimeoutError(f"recalibration {cid}")


def _cli(host: HostServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host.cli", "recalibrate", *args, "--server", host.config.base_url],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_recalibration_is_sent_followed_and_shown(host: HostServer) -> None:
    api = ApiClient(host.config.base_url)
    assert host.broker is not None
    with ScriptedDevice(host.broker.port) as dev:
        answer = api.post("/api/v1/recalibrations", {"device": "dev-1", "eval_dir": "/data/night", "n_images": 150})
        (cid,) = answer["command_ids"]
        assert answer["skipped"] == [] and answer["recalibrations"][0]["state"] in ("sent", "promoted")
        r = _done(api, cid)
    assert list(r) == RECALIBRATION_KEYS and r["state"] == "promoted" and r["promote"] == "auto"
    assert r["options"] == {"n_images": 150, "method": "percentile", "source": "reservoir", "calib_dir": None,
                            "calib_url": None, "eval_dir": "/data/night"}  # fmt: skip
    assert r["release"] == "r20@1.0.0" and r["published"] and r["error"] is None
    o = r["outcome"]
    assert (o["before"], o["after"], o["evaluation"], o["form"]) == (0.62, 0.81, "labelled", "u8s8_reduce_range")
    assert o["moved_ranges"] == [{"tensor": "conv1", "before": 0.5, "after": 4.0, "change": 7.0}]
    (cmd,) = dev.seen
    assert str(cmd.message_id) == cid and cmd.base_url == host.config.base_url and cmd.promote
    assert cmd.eval_dir == "/data/night" and cmd.n_images == 150
    assert [x["id"] for x in api.get("/api/v1/recalibrations?device=dev-1")] == [cid]
    assert api.get("/api/v1/recalibrations?fleet=other") == []
    (fleet_dev,) = [d for d in api.get("/api/v1/fleet") if d["device_id"] == "dev-1"]
    flag = fleet_dev["calibration"]
    assert list(flag) == CALIBRATION_FLAG_KEYS and flag["state"] == "promoted" and flag["command_id"] == cid
    assert (flag["before"], flag["after"], flag["promoted"]) == (0.62, 0.81, True)


def test_manual_keeps_and_promote_swaps_in_the_latest_kept(host: HostServer) -> None:
    api = ApiClient(host.config.base_url)
    assert host.broker is not None
    with ScriptedDevice(host.broker.port) as dev:
        first = api.post("/api/v1/recalibrations", {"device": "dev-1", "promote": "manual"})["command_ids"][0]
        second = api.post("/api/v1/recalibrations", {"device": "dev-1", "promote": "manual"})["command_ids"][0]
        assert _done(api, first)["state"] == "kept" and _done(api, second)["state"] == "kept"
        promote = api.post("/api/v1/devices/lab/dev-1/promote", {})
        assert promote["action"] == "promote" and promote["calibration_id"] == second  # the latest kept
        assert _done(api, promote["id"])["state"] == "promoted"
        assert api.get(f"/api/v1/recalibrations/{second}")["promoted_by"] == promote["id"]
        with pytest.raises(EdgeloopError, match=r"HTTP 409: .*kept no engine to promote: it is promoted"):
            api.post(f"/api/v1/recalibrations/{second}/promote")
        by_id = api.post(f"/api/v1/recalibrations/{first}/promote")  # an older kept one, by its id
        assert _done(api, by_id["id"])["state"] == "promoted"
        with pytest.raises(EdgeloopError, match=r"HTTP 409: .*keeps no calibration of r20@1\.0\.0"):
            api.post("/api/v1/devices/lab/dev-1/promote", {})
    assert [c.action for c in dev.seen] == ["calibrate", "calibrate", "promote", "promote"]
    assert [str(c.calibration_id) for c in dev.seen[2:]] == [second, first]
    (d,) = [d for d in api.get("/api/v1/fleet") if d["device_id"] == "dev-1"]
    assert d["calibration"]["action"] == "promote" and d["calibration"]["after"] == 0.81


def test_a_fleet_recalibrates_its_online_devices_and_says_whom_it_skipped(host: HostServer) -> None:
    api = ApiClient(host.config.base_url)
    assert host.broker is not None
    with ScriptedDevice(host.broker.port):
        answer = api.post("/api/v1/recalibrations", {"fleet": "lab", "method": "minmax"})
        (cid,) = answer["command_ids"]
        assert _done(api, cid)["device_id"] == "dev-1"
    skipped = {s["device_id"]: s["reason"] for s in answer["skipped"]}
    assert skipped == {
        "dev-2": "is offline; ask again when it is back",
        "dev-3": "runs no release yet: roll one out first",
    }


def test_a_set_on_the_host_is_packed_served_and_downloaded(host: HostServer, golden_dir: Path) -> None:
    api = ApiClient(host.config.base_url)
    assert host.broker is not None
    with ScriptedDevice(host.broker.port) as dev:
        cid = api.post("/api/v1/recalibrations", {"device": "dev-1", "calib_data": str(golden_dir)})["command_ids"][0]
        r = _done(api, cid)
    (cmd,) = dev.seen
    assert cmd.source == "url" and r["options"]["source"] == "url"
    assert cmd.calib_url is not None and cmd.calib_url.startswith(host.config.base_url + "calibration-sets/")
    assert r["outcome"]["n_images"] == 200  # every golden image reached the device
    name = cmd.calib_url.rsplit("/", 1)[1]
    packed = host.release_store.root / "calibration-sets" / name
    with tarfile.open(packed) as tar:
        assert all(m.isfile() and m.mtime == 0 and not m.name.startswith("/") for m in tar.getmembers())
    sets = CalibrationSets(host.release_store.root / "calibration-sets")
    assert sets.pack(golden_dir) == name  # the same folder packs to the same bytes
    assert api.get_bytes(f"/calibration-sets/{name}") == packed.read_bytes()
    for bad in ("../h.sqlite", "x.tar.gz", "0" * 64 + ".tar.gz"):
        with pytest.raises(EdgeloopError, match="HTTP 404"):
            api.get_bytes(f"/calibration-sets/{bad}")


def test_what_the_host_refuses(host: HostServer, tmp_path: Path) -> None:
    api = ApiClient(host.config.base_url)
    for body, answer in (
        ({"device": "nobody"}, "HTTP 404: .*knows no device 'nobody'"),
        ({"device": "dev-2"}, "HTTP 409: lab/dev-2 is offline"),
        ({"device": "dev-3"}, "HTTP 409: lab/dev-3 runs no release"),
        ({"fleet": "empty"}, "HTTP 404: fleet 'empty' has no known devices"),
        ({"device": "dev-1", "calib_data": str(tmp_path)}, "HTTP 400: .*holds no images"),
        ({"device": "dev-1", "calib_data": str(tmp_path / "missing")}, "HTTP 400: .*is not a folder"),
        ({}, "HTTP 422"),
        ({"device": "dev-1", "source": "local"}, "HTTP 422"),  # no calib_dir
        ({"device": "dev-1", "calib_dir": "/d", "source": "reservoir"}, "HTTP 422"),
        ({"device": "dev-1", "n_images": 8}, "HTTP 422"),
        ({"device": "dev-1", "promote": "yes"}, "HTTP 422"),
        ({"device": "../x"}, "HTTP 422"),
    ):
        with pytest.raises(EdgeloopError, match=answer):
            api.post("/api/v1/recalibrations", body)
    with pytest.raises(EdgeloopError, match="HTTP 404"):
        api.get("/api/v1/recalibrations/not-a-uuid")
    with pytest.raises(EdgeloopError, match="HTTP 400: 'nope' is not a recalibration id"):
        api.post("/api/v1/recalibrations/nope/promote")
    with pytest.raises(EdgeloopError, match="HTTP 404"):
        api.post("/api/v1/devices/lab/dev-1/promote", {"calibration_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12})
    sent = api.post("/api/v1/recalibrations", {"device": "dev-1"})["command_ids"][0]  # nobody answers it
    with pytest.raises(EdgeloopError, match=r"HTTP 409: .*it is sent"):
        api.post(f"/api/v1/recalibrations/{sent}/promote")


def test_a_command_the_broker_did_not_take_is_re_sent_with_its_message_id(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    store.upsert_status(p.DeviceStatus(device_id="dev-1", fleet="lab", state="online", release=REF))
    published: list[tuple[str, bytes]] = []
    broker_up = False

    def publish(topic: str, payload: bytes) -> bool:
        if broker_up:
            published.append((topic, payload))
        return broker_up

    service = Recalibrations(store, publish, CalibrationSets(tmp_path / "sets"), "http://host:8080/")
    (r,), _ = service.start(RecalibrateRequest(device="dev-1"))
    assert r.state == "unsent" and published == []
    assert service.republish() == 0 and store.recalibration(r.command_id).state == "unsent"  # type: ignore[union-attr]
    broker_up = True
    assert store.unpublished_recalibrations(older_than_s=60) == []  # too young for the loop: its request sends it
    for fleet, cmd in store.unpublished_recalibrations():  # what republish does once RESEND_AFTER_S has passed
        assert service.publish(p.command_topic(fleet, cmd.device_id), p.encode(cmd))
        store.mark_recalibration_published(str(cmd.message_id))
    ((topic, payload),) = published
    assert topic == "edgeloop/v1/lab/dev-1/cmd" and str(p.decode_command(payload).message_id) == r.command_id
    assert store.recalibration(r.command_id).state == "sent"  # type: ignore[union-attr]
    with pytest.raises(RecalibrationError, match="it is sent") as e:
        service.promote(r.command_id)
    assert e.value.status == 409
    store.close()


def test_the_cli_calibrates_waits_promotes_and_shows_it_in_fleet_status(host: HostServer) -> None:
    assert host.broker is not None
    with ScriptedDevice(host.broker.port):
        done = _cli(host, "dev-1", "--promote", "manual", "--eval-dir", "/data/night", "--images", "150", "--wait",
                    "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        (r,) = json.loads(done.stdout)["recalibrations"]
        assert r["state"] == "kept" and r["options"]["eval_dir"] == "/data/night" and r["options"]["n_images"] == 150
        table = _cli(host, "promote", "dev-1", "--wait")
        assert table.returncode == 0, table.stderr
        assert "promoted" in table.stdout and "dev-1" in table.stdout
        sent = _cli(host, "--fleet", "lab")
        assert sent.returncode == 0 and "sent calibrate" in sent.stdout and "skipped dev-2: is offline" in sent.stdout
    status = subprocess.run(
        [sys.executable, "-m", "host.cli", "fleet", "status", "--server", host.config.base_url],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0 and "calibration" in status.stdout, status.stderr
    assert "promoted 62.0->81.0" in status.stdout, status.stdout  # the latest outcome: old -> new top-1 %


def test_cli_errors_are_clear(host: HostServer) -> None:
    for args, message in (
        ((), "name a DEVICE, or --fleet F"),
        (("dev-1", "dev-3"), "one DEVICE"),
        (("promote",), "usage: edgeloop recalibrate promote DEVICE"),
        (("promote", "dev-1", "--eval-dir", "/x"), "--eval-dir go with a calibration"),
        (("dev-1", "--calibration", "x"), "--calibration goes with `edgeloop recalibrate promote DEVICE`"),
        (("dev-1", "--images", "8"), "--images must be 32 to 100000"),
        (("dev-1", "--source", "local"), "HTTP 422: Value error, calib_dir (a folder on the device) goes with source"),
        (("dev-2",), "lab/dev-2 is offline"),
        (("promote", "dev-1"), "keeps no calibration of r20@1.0.0"),
    ):
        done = _cli(host, *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    silent = _cli(host, "dev-1", "--wait", "--timeout", "1")  # nobody answers
    assert silent.returncode == 1 and "no answer within 1 s from dev-1" in silent.stdout


def test_a_calibration_of_another_release_is_not_promoted(tmp_path: Path) -> None:
    """A device keeps the INT8 file of the model it ran then: after a new release, promoting it is refused."""
    store = Store(str(tmp_path / "s.sqlite"))
    store.upsert_status(p.DeviceStatus(device_id="dev-1", fleet="lab", state="online", release=REF))
    service = Recalibrations(store, lambda topic, payload: True, CalibrationSets(tmp_path / "sets"), "http://h/")
    (r,), _ = service.start(RecalibrateRequest(device="dev-1", promote="manual"))
    store.add_reports([("lab", calibration_report("dev-1", command_id=r.command_id, promoted=False))])
    assert store.recalibration(r.command_id).state == "kept"  # type: ignore[union-attr]
    newer = p.ReleaseRef(name="r20", version="1.1.0")
    store.upsert_status(p.DeviceStatus(device_id="dev-1", fleet="lab", state="online", release=newer))
    with pytest.raises(RecalibrationError, match=r"made for r20@1\.0\.0; lab/dev-1 now runs r20@1\.1\.0") as e:
        service.promote(r.command_id)
    assert e.value.status == 409
    with pytest.raises(RecalibrationError, match=r"keeps no calibration of r20@1\.1\.0"):
        service.promote_latest(None, "dev-1")
    store.close()
