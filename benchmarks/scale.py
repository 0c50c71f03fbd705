"""Fleet-scale benchmark: 500 simulated devices against a real Mosquitto and `edgeloop serve`.

    python benchmarks/scale.py [--devices 500] [--reports-per-device 200] [--mode backlog|live] [--store URL]

1. starts Mosquitto on a free loopback port and `edgeloop serve --ingest-workers 2` (MQTT 5 shared
   subscription) as a separate process;
2. brings up N simulated devices with `edgeloop simulate` (the real protocol and MQTT client code;
   300 devices per process, because paho's select() loop cannot watch descriptors >= 1024);
3. rolls a release out to them (canary -> 25% -> 100%) and waits for it to complete;
4. has every device publish K telemetry reports and measures how fast serve writes them to the store:
   * ``live``: serve ingests while the devices publish (simulator, broker and host share 2 cores);
   * ``backlog``: serve is stopped while the devices publish; Mosquitto queues the reports in the
     ingest workers' persistent sessions; serve restarts and drains them: ingest measured alone;
5. checks: every report stored exactly once (N x K rows by message id, none dropped as a duplicate,
   which would mean a report reached both workers) and both workers took a share.

Prints JSON and writes benchmarks/scale-result.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.sysinfo import machine
from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore, create_release
from host.fleet.store.records import TERMINAL
from shared import signing
from tests.helpers import Mosquitto, free_port, wait_port


class Serve:
    def __init__(self, work: Path, releases: Path, store: str, broker_url: str) -> None:
        self.port = free_port()
        self.argv = [sys.executable, "-m", "host.cli", "serve", "--releases", str(releases), "--store", store,
                     "--port", str(self.port), "--broker", broker_url, "--ingest-workers", "2"]  # fmt: skip
        self.log = work / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = ApiClient(f"http://127.0.0.1:{self.port}")

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_port(self.port, 60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def ingest(self) -> list[dict[str, Any]]:
        return list(self.api.get("/api/v1/health")["ingest"])


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--reports-per-device", type=int, default=200)
    ap.add_argument("--mode", choices=["live", "backlog"], default="backlog")
    ap.add_argument("--store", help="store URL (default: SQLite in a temp dir)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "scale-result.json"))
    return ap.parse_args()


def _release(work: Path) -> tuple[ReleaseStore, str]:
    priv, pub = work / "k.key", work / "k.pub"
    signing.generate_keypair(priv, pub)
    releases = ReleaseStore(work / "releases")
    build = work / "build"
    build.mkdir()
    shutil.copy(REPO / "host" / "zoo" / "resnet20.onnx", build / "resnet20.onnx")
    m = create_release(build, "resnet20", "1.0.0", releases, sign_key=priv, source_top1=0.91)
    return releases, str(m.ref)


def _simulate(args: argparse.Namespace, work: Path, broker_url: str, go: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "host.cli", "simulate", "--devices", str(args.devices), "--broker", broker_url,
         "--fleet", "scale", "--prefix", "s", "--respond-delay", "0.2", "--reports-per-device",
         str(args.reports_per_device), "--stream-when", str(go), "--exit-after-stream"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=(work / "sim.log").open("w"), text=True,
    )  # fmt: skip


def _wait_for_fleet(serve: Serve, devices: int) -> tuple[float, int]:
    """Seconds until the host sees every device (or 180 s), and how many it saw."""
    t0 = time.monotonic()
    while len(serve.api.get("/api/v1/fleet?fleet=scale")) < devices and time.monotonic() - t0 < 180:
        time.sleep(0.5)
    return time.monotonic() - t0, len(serve.api.get("/api/v1/fleet?fleet=scale"))


def _rollout(serve: Serve, release: str) -> tuple[dict[str, Any], float]:
    """Roll the release out canary -> 25% -> 100%; the finished rollout and its seconds."""
    t1 = time.monotonic()
    cfg = {"waves": ["1", "25%", "100%"], "max_accuracy_drop": 1.0, "wave_timeout_s": 300}
    rid = serve.api.post("/api/v1/rollouts", {"release": release, "fleet": "scale", "config": cfg})["id"]
    r = serve.api.get(f"/api/v1/rollouts/{rid}")
    while r["state"] not in TERMINAL:
        time.sleep(0.5)
        r = serve.api.get(f"/api/v1/rollouts/{rid}")
    return dict(r), time.monotonic() - t1


@dataclass
class Stream:
    shards: list[dict[str, Any]]  # one summary line per simulator process
    publish_s: float  # backlog mode: how long the devices took to publish everything
    ingest_s: float
    before: int  # reports this serve process had written before the stream


def _stream(args: argparse.Namespace, serve: Serve, sim: subprocess.Popen[str], go: Path) -> Stream:
    """Have the devices publish their telemetry and time how fast serve stores it (see --mode)."""
    total = args.devices * args.reports_per_device
    rollout_reports = sum(w["written"] for w in serve.ingest())
    if args.mode == "backlog":
        serve.stop()  # its two workers' persistent sessions keep collecting at the broker
    t2 = time.monotonic()
    go.touch()
    if args.mode == "backlog":
        out, _ = sim.communicate(timeout=600)
        t_publish = time.monotonic() - t2
        serve.start()
        before = 0  # a fresh serve process counts from zero
    else:
        t_publish = 0.0
        before = rollout_reports
    t3 = time.monotonic()
    written = 0
    while written < total and time.monotonic() - t3 < 900:
        time.sleep(0.05)
        written = sum(w["written"] for w in serve.ingest()) - before
    t_ingest = time.monotonic() - t3
    if args.mode == "live":
        out, _ = sim.communicate(timeout=300)
    shards = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Stream(shards, t_publish, t_ingest, before)


def _result(
    args: argparse.Namespace, store: str, fleet: tuple[float, int], rollout: tuple[dict[str, Any], float],
    stream: Stream, health: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    (t_connect, online), (r, t_rollout) = fleet, rollout
    shards, t_publish, t_ingest, before = stream.shards, stream.publish_s, stream.ingest_s, stream.before
    return {
        "mode": args.mode, "devices": args.devices, "devices_seen_by_host": online,
        "simulator_processes": len(shards), "reports_per_device": args.reports_per_device,
        "reports_sent": sum(x["sent"] for x in shards),
        "unique_report_ids_sent": sum(x["unique_ids"] for x in shards), "connect_s": round(t_connect, 1),
        "rollout": {"id": r["id"], "state": r["state"], "seconds": round(t_rollout, 1),
                    "waves": [len([d for d in r["devices"] if d["wave"] == i]) for i in range(len(r["waves"]))]},
        "telemetry_written": sum(w["written"] for w in health) - before,
        "duplicates_dropped": sum(w["duplicates"] for w in health), "invalid": sum(w["invalid"] for w in health),
        "per_worker_received": [w["received"] for w in health],
        "per_worker_written": [w["written"] for w in health],
        "publish_seconds": round(t_publish, 2) if t_publish else [x["seconds"] for x in shards],
        "ingest_seconds": round(t_ingest, 2),
        "ingest_rate_per_s": round(args.devices * args.reports_per_device / t_ingest),
        "store": "postgresql" if store.startswith("postgresql") else "sqlite", "machine": machine(),
    }  # fmt: skip


def _passed(result: dict[str, Any], total: int) -> bool:
    return bool(
        result["rollout"]["state"] == "completed"
        and result["telemetry_written"] == total
        and result["unique_report_ids_sent"] == total
        and result["duplicates_dropped"] == 0
        and all(n > 0 for n in result["per_worker_written"])
    )


def main() -> int:
    args = _args()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-scale-"))
    broker = Mosquitto(work / "broker", autosave_interval=60, max_inflight_messages=100)  # as deploy/mosquitto
    broker.workdir.mkdir()
    broker.start()
    releases, release = _release(work)
    store = args.store or str(work / "host.sqlite")
    serve = Serve(work, releases.root, store, broker.url)
    serve.start()
    go = work / "go"
    sim = _simulate(args, work, broker.url, go)
    try:
        fleet = _wait_for_fleet(serve, args.devices)
        rollout = _rollout(serve, release)
        stream = _stream(args, serve, sim, go)
        time.sleep(2)  # anything late or duplicated would show up now
        result = _result(args, store, fleet, rollout, stream, serve.ingest())
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        ok = _passed(result, args.devices * args.reports_per_device)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if sim.poll() is None:
            sim.terminate()
            sim.wait(timeout=60)
        serve.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
