"""Failover of the rollout controller between `edgeloop serve` replicas, with real processes: three replicas
on one PostgreSQL database (of the test's own) and one Mosquitto, simulated devices that answer over MQTT,
a rollout in three waves, and ``kill -9`` of the replica holding the controller lease while a wave is out.

Another replica takes the lease over within the lease's length, the rollout completes, every device got one
deploy (counted on the command topics by a plain MQTT client, per device, command kind and release), and
every report the devices sent is stored exactly once, those the killed replica's ingest session held
included (another replica adopts its slot and drains it). The counts are printed for CI's log.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore
from host.fleet.simulate import DeviceModel, SimFleet
from host.fleet.tls import broker_settings
from shared import protocol as p
from tests.e2e.conftest import wait
from tests.fixtures import MakeRelease
from tests.helpers import REPO, Mosquitto, Recorder, agent_env, free_port, wait_port
from tests.pgdb import private_postgres

pytestmark = pytest.mark.e2e

LEASE_S = 5.0
DEVICES = 6


class Replica:
    """One `edgeloop serve` process on the shared PostgreSQL store."""

    def __init__(self, name: str, store_url: str, broker: str, releases: Path, workdir: Path) -> None:
        self.name, self.port = name, free_port()
        self.log = workdir / f"serve-{name}.log"
        argv = [sys.executable, "-m", "host.cli", "serve", "--releases", str(releases), "--store", store_url,
                "--port", str(self.port), "--broker", broker, "--replica-id", name,
                "--lease-seconds", str(LEASE_S)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, env=agent_env(), stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)  # fmt: skip
        self.api = ApiClient(f"http://127.0.0.1:{self.port}")

    def health(self) -> dict[str, Any] | None:
        try:
            return dict(self.api.get("/api/v1/health"))
        except Exception:  # not up yet, or killed
            return None

    def holds_controller(self) -> bool:
        h = self.health()
        return bool(h and h["replica"]["controller"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Telemetry:
    """Every device streams benchmark reports (not tied to the rollout) until stopped: ingest is busy
    across the kill, so the killed replica's ingest session holds some of them."""

    def __init__(self, fleet: SimFleet, per_second: float) -> None:
        self._fleet, self._interval = fleet, 1 / per_second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self._interval):
            d = self._fleet.devices[i % len(self._fleet.devices)]
            d.send_telemetry(d.telemetry(1))
            i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _commands(rec: Recorder) -> collections.Counter[tuple[str, str, str]]:
    """(device, command kind, release) -> how many the broker delivered on the command topics."""
    out: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for raw in rec.topics("/cmd"):
        c = p.decode_command(raw)
        release = str(c.manifest.ref) if isinstance(c, p.DeployCommand) else str(getattr(c, "target", ""))
        out[(c.device_id, c.kind, release)] += 1
    return out


def _stored_ids(url: str) -> list[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT message_id FROM reports"))]
    finally:
        engine.dispose()


def _holder(replicas: list[Replica], timeout: float) -> Replica:
    return wait(lambda: next((r for r in replicas if r.holds_controller()), None), timeout, "a controller lease holder")


def test_kill_9_of_the_controlling_replica_mid_wave(
    mosquitto: Mosquitto, store: ReleaseStore, make_release: MakeRelease, zoo_onnx: Path, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    m = make_release(zoo_onnx, "1.0.0")
    with private_postgres("edgeloop_failover") as url:
        replicas = [Replica(f"r{i}", url, mosquitto.url, store.root, tmp_path) for i in (1, 2, 3)]
        rec = Recorder(mosquitto.port, "edgeloop/v1/+/+/cmd", client_id="cmd-counter")
        model = DeviceModel(respond_delay_s=2.0)  # answers come 1-3 s after a deploy: the wave is out a while
        fleet = SimFleet(DEVICES, broker_settings(mosquitto.url), fleet="lab", model=model)
        telemetry: Telemetry | None = None
        try:
            for r in replicas:
                wait_port(r.port, timeout=90)
            fleet.start()
            wait(lambda: len([d for d in replicas[0].api.get("/api/v1/fleet") if d["state"] == "online"]) == DEVICES,
                 60, "every simulated device online")  # fmt: skip
            telemetry = Telemetry(fleet, per_second=40)
            _failover(replicas, rec, m, fleet, url, t0)
        finally:
            if telemetry is not None:
                telemetry.stop()
            fleet.stop()
            rec.close()
            for r in replicas:
                r.stop()


def _failover(replicas: list[Replica], rec: Recorder, m: Any, fleet: SimFleet, url: str, t0: float) -> None:
    holder = _holder(replicas, 30)
    others = [r for r in replicas if r is not holder]
    cfg = {"waves": ["1", "50%", "100%"], "max_accuracy_drop": 1.0, "wave_timeout_s": 60}
    rid = str(others[0].api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg})["id"])

    def wave_out(api: ApiClient, w: int) -> list[str] | None:
        r = api.get(f"/api/v1/rollouts/{rid}")
        members = [d["device_id"] for d in r["devices"] if d["wave"] == w]
        delivered = {k[0] for k in _commands(rec) if k[1] == "deploy"}
        return members if r["waves"][w]["state"] == "sent" and set(members) <= delivered else None

    members = wait(lambda: wave_out(others[0].api, 1), 60, "wave 1 out")
    holder.proc.kill()  # SIGKILL: no lease released, no session closed
    killed_at = time.monotonic()
    holder.proc.wait(timeout=10)
    new = _holder(others, LEASE_S + 10)
    takeover = time.monotonic() - killed_at
    done = wait(lambda: (x := new.api.get(f"/api/v1/rollouts/{rid}"))["state"] in ("completed", "rolled_back",
                "aborted") and x, 90, "rollout finished")  # fmt: skip
    time.sleep(1.0)
    assert fleet.wait_acked(30)
    sent = [i for d in fleet.devices for i in d.stats.report_ids]
    stored = wait(lambda: (ids := _stored_ids(url)) and set(sent) <= set(ids) and ids, 60, "every report stored")
    health = [h for r in others if (h := r.health())]
    logs = lambda: "".join(r.log.read_text() for r in others)  # noqa: E731
    drained = wait(lambda: re.findall(r"drained and closed \((\d+) reports", logs()), 30, "orphan session drained")
    deploys = _commands(rec)
    per_device = collections.Counter({d: n for (d, kind, _), n in deploys.items() if kind == "deploy"})
    print(f"\nreplica failover: killed {holder.name} (controller lease holder) with wave 1 out to {members}; "
          f"{new.name} took the lease over in {takeover:.1f} s (lease {LEASE_S:.0f} s); rollout {done['state']} "
          f"waves={[w['state'] for w in done['waves']]} epochs={[d['epoch'] for d in done['devices']]}; "
          f"deploys per device={dict(sorted(per_device.items()))} other commands="
          f"{sum(n for k, n in deploys.items() if k[1] != 'deploy')}; reports sent={len(sent)} stored={len(stored)} "
          f"unique={len(set(stored))} lost={len(set(sent) - set(stored))} "
          f"redelivered and already stored={sum(w['duplicates'] for h in health for w in h['ingest'])}; "
          f"reports drained from the killed replica's ingest session={sum(map(int, drained))}; "
          f"seconds={time.monotonic() - t0:.0f}")  # fmt: skip
    assert done["state"] == "completed", done["reason"]
    assert takeover <= LEASE_S + 1.5, takeover  # the lease's length, plus polling the health endpoints
    assert set(per_device) == {d.device_id for d in fleet.devices} and set(per_device.values()) == {1}, deploys
    assert all(k[1] == "deploy" for k in deploys), deploys
    assert len(stored) == len(set(stored)) and set(stored) == set(sent)
    assert re.search(rf"adopts ingest slot \d+ of {holder.name} ", logs())  # the killed replica's own slot
