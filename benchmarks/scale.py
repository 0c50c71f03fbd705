"""Fleet-scale benchmark: simulated devices against a real Mosquitto and `edgeloop serve`.

    python benchmarks/scale.py [--devices 500] [--reports-per-device 60] [--mode backlog|live] [--store URL]
                               [--replicas 1] [--ingest-workers 2]
    python benchmarks/scale.py --suite [--before DIR] [--postgres URL] [--devices 300] [--reports-per-device 100]

One scenario:

1. starts Mosquitto on a free loopback port and ``--replicas`` `edgeloop serve` processes (``--replica-id``
   each, ``--ingest-workers`` each, MQTT 5 shared subscription) on one store (several replicas need
   PostgreSQL);
2. brings up N simulated devices with `edgeloop simulate` (the real protocol and MQTT client code;
   300 devices per process, because paho's select() loop cannot watch descriptors >= 1024);
3. rolls a release out to them (canary -> 25% -> 100%) and waits for it to complete;
4. has every device publish K benchmark reports (the fleet's periodic telemetry) and measures how fast
   serve writes them to the store:
   * ``live``: serve ingests while the devices publish (simulator, broker and host share the cores);
   * ``backlog``: every serve process is frozen (SIGSTOP, its ingest worker processes too) while the
     devices publish, so Mosquitto queues the reports in the ingest workers' persistent sessions; then
     resumed (SIGCONT), it drains them: ingest measured alone, without a process start in it (a
     replica that stops hands its ingest slots to the others, which would blur 1 vs 2 replicas). The
     freeze must stay under 1.5 keepalives (45 s), or the broker drops the connections: hence
     backlogs of some 30,000 reports, which this machine publishes in 15-20 s;
5. checks: every report stored exactly once (N x K rows by message id, none dropped as a duplicate,
   which would mean a report reached two workers) and every worker took a share.

``ingest_rate_per_s`` is the store's own clock: the reports written between the drain's first and last
batch commit (``received_at``, the host's clock at each batch's write) over the time between them.
``ingest_seconds`` is the wall time from the resume (or the go) to the last report seen by serve's health.
``cpu_seconds``: what serve (every replica, with its worker processes), the broker and the run's
PostgreSQL backends used meanwhile, so ``reports_per_cpu_s`` tells the cost of a report also on a
machine that other jobs share.

``--suite`` makes the final figures in one run: the backlog drain on SQLite and on PostgreSQL with the
code before (``--before DIR``: a checkout of the base commit, e.g. a `git worktree`; its serve runs
from DIR) and with this tree, then 1 vs 2 replicas on PostgreSQL, one ingest worker each, so that one
replica leaves a core to the second. It writes benchmarks/scale-result.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine.sysinfo import machine
from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore, create_release
from host.fleet.store.records import TERMINAL
from host.fleet.store.schema import benchmarks
from shared import signing
from tests.helpers import Mosquitto, free_port, wait_port

KEEPALIVE_LIMIT_S = 40  # a frozen serve's MQTT connections outlive this (keepalive 30 s x 1.5)
LEASE_S = 120  # longer than any freeze: no replica adopts another's ingest slot while they are frozen


class Serve:
    """One `edgeloop serve` process, run from ``code`` (this tree, or a checkout of the code before)."""

    def __init__(self, work: Path, code: Path, releases: Path, store: str, broker_url: str, replica: str,
                 workers: int) -> None:  # fmt: skip
        self.port, self.code = free_port(), code
        self.argv = [sys.executable, "-m", "host.cli", "serve", "--releases", str(releases), "--store", store,
                     "--port", str(self.port), "--broker", broker_url, "--ingest-workers", str(workers),
                     "--replica-id", replica, "--lease-seconds", str(LEASE_S)]  # fmt: skip
        self.log = work / f"serve-{replica}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = ApiClient(f"http://127.0.0.1:{self.port}")

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELOOP_")}
        env["PYTHONPATH"] = str(self.code)  # -m host.cli from cwd; spawned workers get the same path
        self.proc = subprocess.Popen(self.argv, cwd=self.code, env=env, stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def wait(self) -> None:
        wait_port(self.port, 90)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def processes(self) -> list[psutil.Process]:
        """serve and its ingest worker processes."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)

    def ingest(self) -> list[dict[str, Any]]:
        return list(self.api.get("/api/v1/health")["ingest"])


@dataclass
class Scenario:
    label: str
    store: str  # "sqlite" or "postgresql"
    code: Path = REPO
    code_name: str = "after"
    replicas: int = 1
    workers: int = 2  # ingest workers per replica
    mode: str = "backlog"


@dataclass
class Cluster:
    serves: list[Serve]
    broker: Mosquitto
    store_url: str
    db_name: str = ""  # PostgreSQL: the run's own database
    cpu_marks: dict[str, float] = field(default_factory=dict)

    def ingest(self) -> list[dict[str, Any]]:
        return [w for s in self.serves for w in s.ingest()]

    def written(self) -> int:
        return sum(w["written"] for w in self.ingest())

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of serve (all processes), the broker and the run's PostgreSQL backends."""
        out = {"serve": 0.0, "broker": 0.0, "postgresql": 0.0}
        procs: list[tuple[str, psutil.Process]] = [("serve", p) for s in self.serves for p in s.processes()]
        if self.broker.proc is not None:
            procs.append(("broker", psutil.Process(self.broker.proc.pid)))
        if self.db_name:  # its backends: "postgres: user db 127.0.0.1(port) idle"
            procs += [
                ("postgresql", p)
                for p in psutil.process_iter(["name", "cmdline"])
                if "postgres" in (p.info["name"] or "") and self.db_name in " ".join(p.info["cmdline"] or [])
            ]
        for kind, p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                out[kind] += t.user + t.system
        return out


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int)
    ap.add_argument("--reports-per-device", type=int)
    ap.add_argument("--mode", choices=["live", "backlog"], default="backlog")
    ap.add_argument("--store", help="store URL (default: SQLite in a temp dir)")
    ap.add_argument("--replicas", type=int, default=1, help="serve processes (several need --store postgresql://)")
    ap.add_argument("--ingest-workers", type=int, default=2, help="per replica")
    ap.add_argument("--suite", action="store_true", help="before/after on SQLite and PostgreSQL, 1 vs 2 replicas")
    ap.add_argument("--before", type=Path, help="--suite: a checkout of the code before (serve runs from it)")
    ap.add_argument("--postgres", default=os.environ.get("EDGELOOP_TEST_POSTGRES_URL"),
                    help="--suite: PostgreSQL whose user may create databases (each run makes its own)")  # fmt: skip
    ap.add_argument("--conditions", help="what else ran on the machine meanwhile (goes into the JSON)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "scale-result.json"))
    args = ap.parse_args()
    args.devices = args.devices or (300 if args.suite else 500)
    args.reports_per_device = args.reports_per_device or (100 if args.suite else 60)
    return args


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


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def _store(kind: str, work: Path, given: str | None, postgres: str | None) -> Iterator[tuple[str, str]]:
    """The run's store URL (and PostgreSQL database name): ``given``, a new SQLite file, or a new database
    on ``postgres``'s server, dropped afterwards."""
    if given:
        yield given, ""
        return
    if kind == "sqlite":
        yield str(work / "host.sqlite"), ""
        return
    if not postgres:
        raise SystemExit("PostgreSQL runs need --postgres URL (or EDGELOOP_TEST_POSTGRES_URL)")
    name = f"edgeloop_scale_{uuid.uuid4().hex[:10]}"
    admin = _admin(postgres)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres.rsplit("/", 1)[0] + "/" + name, name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
    before: int  # reports these serve processes had written before the stream
    cpu: dict[str, float]  # CPU seconds used during the drain
    load: float  # the machine's 1-minute load average as the drain began (other jobs share the cores)


def _stream(args: argparse.Namespace, mode: str, cluster: Cluster, sim: subprocess.Popen[str], go: Path) -> Stream:
    """Have the devices publish their reports and time how fast serve stores them (see --mode)."""
    total = args.devices * args.reports_per_device
    before = cluster.written()
    if mode == "backlog":
        for s in cluster.serves:  # the workers' persistent sessions keep collecting at the broker
            s.signal(signal.SIGSTOP)
    t2 = time.monotonic()
    go.touch()
    out = ""
    if mode == "backlog":
        try:
            out, _ = sim.communicate(timeout=KEEPALIVE_LIMIT_S)
        except subprocess.TimeoutExpired as e:
            for s in cluster.serves:
                s.signal(signal.SIGCONT)
            raise SystemExit(f"publishing took over {KEEPALIVE_LIMIT_S} s: fewer --devices/--reports-per-device") from e
    t_publish = time.monotonic() - t2 if mode == "backlog" else 0.0
    cpu0, load = cluster.cpu(), os.getloadavg()[0]
    t3 = time.monotonic()
    for s in cluster.serves:
        s.signal(signal.SIGCONT)
    written = 0
    while written < total and time.monotonic() - t3 < 900:
        time.sleep(0.1)
        written = cluster.written() - before
    t_ingest = time.monotonic() - t3
    cpu1 = cluster.cpu()
    if mode == "live":
        out, _ = sim.communicate(timeout=300)
    shards = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Stream(shards, t_publish, t_ingest, before, {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}, round(load, 2))


def _store_rate(url: str) -> dict[str, Any]:
    """The drain's rate by the store's clock: the streamed reports (no rollout) written after the first
    batch's commit, over the time from that commit to the last one."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        q = (
            sa.select(benchmarks.c.received_at, sa.func.count())
            .where(benchmarks.c.rollout_id.is_(None))
            .group_by(benchmarks.c.received_at)
            .order_by(benchmarks.c.received_at)
        )
        with engine.connect() as conn:
            batches = [(r[0], int(r[1])) for r in conn.execute(q)]
    finally:
        engine.dispose()
    if len(batches) < 2:
        return {"ingest_rate_per_s": None, "batches": len(batches)}
    span = (batches[-1][0] - batches[0][0]).total_seconds()
    rows = sum(n for _, n in batches[1:])
    return {"ingest_rate_per_s": round(rows / span), "store_span_s": round(span, 2), "batches": len(batches),
            "mean_batch": round(sum(n for _, n in batches) / len(batches))}  # fmt: skip


def _passed(result: dict[str, Any], total: int) -> bool:
    return bool(
        result["rollout"]["state"] == "completed"
        and result["telemetry_written"] == total
        and result["unique_report_ids_sent"] == total
        and result["duplicates_dropped"] == 0
        and all(n > 0 for n in result["per_worker_written"])
    )


def run(args: argparse.Namespace, sc: Scenario, store_url: str | None = None) -> dict[str, Any]:
    """One scenario, from a new broker and a new store to the checked result."""
    if sc.replicas > 1 and sc.store == "sqlite":
        raise SystemExit("several replicas need PostgreSQL")
    work = Path(tempfile.mkdtemp(prefix="edgeloop-scale-"))
    broker = Mosquitto(work / "broker", autosave_interval=60, max_inflight_messages=100)  # as deploy/mosquitto
    broker.workdir.mkdir()
    broker.start()
    releases, release = _release(work)
    sim: subprocess.Popen[str] | None = None
    print(f"== {sc.label}: {sc.code_name} code, {sc.store}, {sc.replicas} replica(s) x {sc.workers} ingest worker(s)",
          flush=True)  # fmt: skip
    with _store(sc.store, work, store_url, args.postgres) as (url, db_name):
        serves = [Serve(work, sc.code, releases.root, url, broker.url, f"scale-{i + 1}", sc.workers)
                  for i in range(sc.replicas)]  # fmt: skip
        cluster = Cluster(serves, broker, url, db_name)
        try:
            serves[0].start()
            serves[0].wait()  # the first migrates the store; the others start next to it
            for s in serves[1:]:
                s.start()
            for s in serves[1:]:
                s.wait()
            go = work / "go"
            sim = _simulate(args, work, broker.url, go)
            t_connect, online = _wait_for_fleet(serves[0], args.devices)
            r, t_rollout = _rollout(serves[0], release)
            stream = _stream(args, sc.mode, cluster, sim, go)
            time.sleep(2)  # anything late or duplicated would show up now
            health = cluster.ingest()
            total = args.devices * args.reports_per_device
            shards = stream.shards
            cpu_total = sum(stream.cpu.values())
            result: dict[str, Any] = {
                "label": sc.label, "code": sc.code_name, "store": sc.store, "mode": sc.mode,
                "replicas": sc.replicas, "ingest_workers_per_replica": sc.workers,
                "devices": args.devices, "devices_seen_by_host": online,
                "simulator_processes": len(shards), "reports_per_device": args.reports_per_device,
                "reports_sent": sum(x["sent"] for x in shards),
                "unique_report_ids_sent": sum(x["unique_ids"] for x in shards), "connect_s": round(t_connect, 1),
                "rollout": {"id": r["id"], "state": r["state"], "seconds": round(t_rollout, 1),
                            "waves": [sum(d["wave"] == i for d in r["devices"]) for i in range(len(r["waves"]))]},
                "telemetry_written": sum(w["written"] for w in health) - stream.before,
                "duplicates_dropped": sum(w["duplicates"] for w in health),
                "invalid": sum(w["invalid"] for w in health),
                "per_worker_received": [w["received"] for w in health],
                "per_worker_written": [w["written"] for w in health],
                "publish_seconds": round(stream.publish_s, 2) if stream.publish_s else [x["seconds"] for x in shards],
                **_store_rate(url),
                "ingest_seconds": round(stream.ingest_s, 2),
                "wall_rate_per_s": round(total / stream.ingest_s),
                "cpu_seconds": stream.cpu,
                "reports_per_cpu_s": round(total / cpu_total) if cpu_total else None,
                "load_average_at_drain": stream.load,
            }  # fmt: skip
            result["passed"] = _passed(result, total)
            print(json.dumps({k: result[k] for k in ("label", "ingest_rate_per_s", "wall_rate_per_s", "cpu_seconds",
                                                     "reports_per_cpu_s", "per_worker_written", "passed")}),
                  flush=True)  # fmt: skip
            return result
        finally:
            if sim is not None and sim.poll() is None:
                sim.terminate()
                sim.wait(timeout=60)
            for s in serves:
                s.stop()
            broker.stop()


def _suite(args: argparse.Namespace) -> dict[str, Any]:
    scenarios: list[Scenario] = []
    for store in ("sqlite", "postgresql"):
        if args.before is not None:
            scenarios.append(Scenario(f"{store}-before", store, args.before.resolve(), "before"))
        scenarios.append(Scenario(f"{store}-after", store))
    scenarios += [Scenario(f"postgresql-{n}-replica", "postgresql", replicas=n, workers=1) for n in (1, 2)]
    load = os.getloadavg()
    runs = [run(args, sc) for sc in scenarios]
    rate = {r["label"]: r["ingest_rate_per_s"] for r in runs}
    summary: dict[str, Any] = {}
    for store in ("sqlite", "postgresql"):
        after = rate[f"{store}-after"]
        summary[store] = {"after_per_s": after, "after_reports_per_cpu_s": _get(runs, f"{store}-after")}
        if f"{store}-before" in rate:
            before = rate[f"{store}-before"]
            summary[store] |= {"before_per_s": before, "speedup": round(after / before, 2) if before else None,
                               "before_reports_per_cpu_s": _get(runs, f"{store}-before")}  # fmt: skip
    one, two = rate["postgresql-1-replica"], rate["postgresql-2-replica"]
    summary["replicas_postgresql"] = {"1_replica_per_s": one, "2_replicas_per_s": two,
                                      "scaling": round(two / one, 2) if one else None}  # fmt: skip
    return {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "conditions": args.conditions,
        "before": str(args.before) if args.before else None,
        "summary": summary,
        "passed": all(r["passed"] for r in runs),
        "runs": runs,
    }


def _get(runs: list[dict[str, Any]], label: str) -> Any:
    return next(r["reports_per_cpu_s"] for r in runs if r["label"] == label)


def main() -> int:
    args = _args()
    if args.suite:
        result = _suite(args)
        ok = bool(result["passed"])
    else:
        kind = "postgresql" if (args.store or "").startswith("postgresql") else "sqlite"
        sc = Scenario(f"{kind}-{args.mode}", kind, replicas=args.replicas, workers=args.ingest_workers,
                      mode=args.mode)  # fmt: skip
        result = run(args, sc, args.store) | {"machine": machine()}
        ok = bool(result["passed"])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
