"""Fleet-scale benchmark: 500 simulated devices against a real Mosquitto and `edgeloop serve`.

    python benchmarks/scale.py [--devices 500] [--reports-per-device 200] [--store PATH_OR_URL]

1. starts Mosquitto on a free loopback port and `edgeloop serve --ingest-workers 2` (MQTT 5 shared
   subscription) as a separate process;
2. brings up N simulated devices (host.simulate: the real protocol and MQTT client code);
3. rolls a release out to them (canary -> 25% -> 100%) and waits for it to complete;
4. has every device publish its telemetry reports (N x K in all) and measures how fast serve
   writes them to the store;
5. checks: every report stored exactly once (count == N x K by message id), the two workers each
   took a share, and no report reached both workers.

Prints a table and writes benchmarks/scale-result.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from host.client import ApiClient
from host.release import ReleaseStore, create_release
from host.simulate import DeviceModel, SimFleet
from shared import signing
from shared.mqtt import BrokerSettings
from tests.helpers import Mosquitto, free_port, wait_port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--reports-per-device", type=int, default=200)
    ap.add_argument("--store", help="store URL (default: SQLite in a temp dir)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "scale-result.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-scale-"))
    broker = Mosquitto(work / "broker")
    broker.workdir.mkdir()
    broker.start()
    priv, pub = work / "k.key", work / "k.pub"
    signing.generate_keypair(priv, pub)
    releases = ReleaseStore(work / "releases")
    build = work / "build"
    build.mkdir()
    shutil.copy(REPO / "host" / "zoo" / "resnet20.onnx", build / "resnet20.onnx")
    m = create_release(build, "resnet20", "1.0.0", releases, sign_key=priv, source_top1=0.91)
    port = free_port()
    store = args.store or str(work / "host.sqlite")
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host.cli",
            "serve",
            "--releases",
            str(releases.root),
            "--store",
            store,
            "--port",
            str(port),
            "--broker",
            broker.url,
            "--ingest-workers",
            "2",
        ],
        cwd=REPO,
        stdout=(work / "serve.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    wait_port(port, 60)
    api = ApiClient(f"http://127.0.0.1:{port}")
    fleet = SimFleet(args.devices, BrokerSettings.from_url(broker.url), "scale", DeviceModel(respond_delay_s=0.2))
    try:
        t0 = time.monotonic()
        fleet.start(timeout=120)
        t_connect = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while len(api.get("/api/v1/fleet?fleet=scale")) < args.devices and time.monotonic() < deadline:
            time.sleep(0.5)
        t1 = time.monotonic()
        cfg = {"waves": ["1", "25%", "100%"], "max_accuracy_drop": 1.0, "wave_timeout_s": 300}
        rid = api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "scale", "config": cfg})["id"]
        r = api.get(f"/api/v1/rollouts/{rid}")
        while r["state"] not in ("completed", "rolled_back", "aborted"):
            time.sleep(0.5)
            r = api.get(f"/api/v1/rollouts/{rid}")
        t_rollout = time.monotonic() - t1
        base = api.get("/api/v1/health")["ingest"]
        before_written = sum(w["written"] for w in base)
        total = args.devices * args.reports_per_device
        t2 = time.monotonic()
        sent = fleet.stream(args.reports_per_device)
        t_sent = time.monotonic() - t2
        written = before_written
        while written < before_written + total and time.monotonic() - t2 < 600:
            time.sleep(0.2)
            health = api.get("/api/v1/health")["ingest"]
            written = sum(w["written"] for w in health)
        t_ingest = time.monotonic() - t2
        time.sleep(2)  # anything late or duplicated would show up now
        health = api.get("/api/v1/health")["ingest"]
        ids = [i for d in fleet.devices for i in d.stats.telemetry_ids]
        result = {
            "devices": args.devices,
            "reports_per_device": args.reports_per_device,
            "reports_sent": sent,
            "unique_report_ids_sent": len(set(ids)),
            "connect_s": round(t_connect, 1),
            "rollout": {
                "id": rid,
                "state": r["state"],
                "waves": [len([d for d in r["devices"] if d["wave"] == i]) for i in range(len(r["waves"]))],
                "seconds": round(t_rollout, 1),
            },
            "telemetry_written": sum(w["written"] for w in health) - before_written,
            "duplicates_dropped": sum(w["duplicates"] for w in health),
            "invalid": sum(w["invalid"] for w in health),
            "per_worker_received": [w["received"] for w in health],
            "per_worker_written": [w["written"] for w in health],
            "publish_seconds": round(t_sent, 2),
            "publish_rate_per_s": round(sent / t_sent),
            "ingest_seconds": round(t_ingest, 2),
            "ingest_rate_per_s": round(total / t_ingest),
            "store": "postgresql" if store.startswith("postgresql") else "sqlite",
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        ok = (
            r["state"] == "completed"
            and result["telemetry_written"] == total
            and result["unique_report_ids_sent"] == total
            and result["duplicates_dropped"] == 0
            and all(n > 0 for n in result["per_worker_written"])
        )
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        fleet.stop()
        serve.terminate()
        serve.wait(timeout=30)
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
