"""Fleet simulator: N light devices that speak the real protocol over the real MQTT client code.

Each simulated device holds one ``MqttSession`` (its own client id, retained status, Last Will),
answers ``deploy``/``rollback``/``benchmark`` with DeployReport + BenchmarkReport from a simple
latency/accuracy model, and can stream telemetry for load tests. Failures can be injected.
Used to test and benchmark the host (ingest, rollouts, dashboard) at fleet scale. Over TLS a simulated
fleet either shares one client certificate (``--broker-cert``: the host-services listener with a
simulator identity, or a development broker) or, like real devices, uses one certificate per device
from the PKI folder of ``edgeloop certs`` (``--device-certs``: the device listener and its ACL).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.fleet.tls import BrokerTls, broker_settings, device_broker
from shared import protocol
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, MqttSession
from shared.protocol import (
    BenchmarkReport,
    DeployCommand,
    DeployReport,
    DeviceStatus,
    LatencyStats,
    ReleaseRef,
    RollbackCommand,
    SystemInfo,
)

log = logging.getLogger(__name__)


@dataclass
class DeviceModel:
    """How a simulated device behaves."""

    p50_ms: float = 2.0  # latency of a model with ``reference_macs``
    reference_macs: int = 40_813_184
    jitter: float = 0.05
    p99_factor: float = 1.5
    accuracy_drop_points: float = 0.0  # measured top-1 = release source top-1 - this (+ noise)
    accuracy_noise_points: float = 0.2
    deploy_failure_rate: float = 0.0
    respond_delay_s: float = 0.05
    accelerator: str = "Orin (simulated)"


@dataclass
class SimStats:
    commands: int = 0
    reports: int = 0
    telemetry_sent: int = 0
    telemetry_ids: list[str] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)  # every report the broker was handed, in order


class SimDevice:
    def __init__(self, device_id: str, fleet: str, broker: BrokerSettings, model: DeviceModel, seed: int) -> None:
        self.device_id, self.fleet, self.model = device_id, fleet, model
        self.rng = random.Random(seed)  # noqa: S311  (simulation noise, not crypto)
        self.release: ReleaseRef | None = None
        self.previous: ReleaseRef | None = None
        self.manifests: dict[str, protocol.ReleaseManifest] = {}
        self.stats = SimStats()
        self._lock = threading.Lock()
        will = protocol.encode(self._status("offline"))
        self.session = MqttSession(
            broker,
            client_id=f"sim-{fleet}-{device_id}",
            subscriptions=[(protocol.command_topic(fleet, device_id), 1)],
            on_message=self._on_message,
            will=(protocol.status_topic(fleet, device_id), will, 1, True),
            on_connected=self.publish_status,
        )

    def _status(self, state: str) -> DeviceStatus:
        return DeviceStatus(
            device_id=self.device_id,
            fleet=self.fleet,
            state=state,
            release=self.release,
            previous_release=self.previous,
            runtime="tensorrt",
            runtime_version="10.3 (sim)",
            precision="int8" if self.release else None,
            accelerator=self.model.accelerator,
            gpu=True,
            agent_version="sim",
            system=SystemInfo(cpu_percent=10.0, sources=("sim",)),
        )

    def publish_status(self) -> None:
        self.session.publish(
            protocol.status_topic(self.fleet, self.device_id),
            protocol.encode(self._status("online")),
            qos=1,
            retain=True,
        )

    def _report(self, message: protocol.WireModel) -> None:
        kind = getattr(message, "kind")  # noqa: B009
        self.session.publish(protocol.report_topic(self.fleet, self.device_id, kind), protocol.encode(message), qos=1)
        self.stats.reports += 1
        self.stats.report_ids.append(str(getattr(message, "message_id")))  # noqa: B009

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            cmd = protocol.decode_command(payload)
        except EdgeloopError as e:
            log.warning("%s: bad command: %s", self.device_id, e)
            return
        self.stats.commands += 1
        # answer from a worker thread: never block paho's network thread
        threading.Thread(target=self._handle, args=(cmd,), daemon=True).start()

    def _handle(self, cmd: object) -> None:
        time.sleep(self.model.respond_delay_s * (0.5 + self.rng.random()))
        with self._lock:
            if isinstance(cmd, DeployCommand):
                self._activate(cmd.manifest, cmd, "deploy")
            elif isinstance(cmd, RollbackCommand):
                target = cmd.manifest or (self.manifests.get(str(cmd.target)) if cmd.target else None)
                if target is not None:
                    self._activate(target, cmd, "rollback")
            elif isinstance(cmd, protocol.BenchmarkCommand) and self.release is not None:
                self._report(self.benchmark(self.manifests[str(self.release)], cmd.rollout_id, cmd.message_id))

    def _activate(self, manifest: protocol.ReleaseManifest, cmd: DeployCommand | RollbackCommand, action: str) -> None:
        error = None
        if not manifest.ships_to("tensorrt"):  # as a real agent: a release made for other runtimes is refused
            error = f"no_suitable_artifact: release {manifest.ref} is made for {', '.join(manifest.runtimes or ())}"
        elif action != "rollback" and self.rng.random() < self.model.deploy_failure_rate:
            error = "injected failure"
        ok = error is None
        previous = self.release
        if ok:
            self.manifests[str(manifest.ref)] = manifest
            if self.release != manifest.ref:
                self.previous, self.release = self.release, manifest.ref
        self._report(
            DeployReport(
                device_id=self.device_id,
                rollout_id=cmd.rollout_id,
                command_id=cmd.message_id,
                release=manifest.ref,
                ok=ok,
                action=action,
                error=error,
                previous_release=previous,
                runtime="tensorrt",
                precision="int8",
                accelerator=self.model.accelerator,
            )
        )
        self.publish_status()
        if ok and isinstance(cmd, DeployCommand):
            self._report(self.benchmark(manifest, cmd.rollout_id, cmd.message_id))

    def benchmark(
        self, manifest: protocol.ReleaseManifest, rollout_id: str | None = None, command_id: object = None
    ) -> BenchmarkReport:
        m = self.model
        scale = (manifest.model.macs or m.reference_macs) / m.reference_macs
        p50 = m.p50_ms * scale * (1 + self.rng.uniform(-m.jitter, m.jitter))
        top1 = manifest.model.source_top1 - (m.accuracy_drop_points + self.rng.gauss(0, m.accuracy_noise_points)) / 100
        top1 = min(1.0, max(0.0, top1))
        lat = LatencyStats(
            p50=p50, p90=p50 * 1.2, p99=p50 * m.p99_factor, max=p50 * m.p99_factor * 1.3, mean=p50 * 1.05
        )
        return BenchmarkReport(
            device_id=self.device_id,
            rollout_id=rollout_id,
            command_id=command_id,
            release=manifest.ref,
            runtime="tensorrt",
            precision="int8",
            accelerator=m.accelerator,
            batch=1,
            iterations=200,
            latency_ms=lat,
            raw_throughput_ips=1000 / p50 * 8,
            top1=top1,
            n_images=1000,
        )

    def telemetry(self, count: int) -> list[BenchmarkReport]:
        """``count`` periodic BenchmarkReports (not tied to a rollout), made ahead of sending."""
        m = self.manifests.get(str(self.release)) if self.release is not None else None
        out = []
        for _ in range(count):
            if m is None:
                lat = LatencyStats(p50=2, p90=2.4, p99=3, max=4, mean=2.1)
                out.append(
                    BenchmarkReport(
                        device_id=self.device_id,
                        runtime="tensorrt",
                        precision="int8",
                        batch=1,
                        iterations=100,
                        latency_ms=lat,
                        raw_throughput_ips=4000.0,
                    )
                )
            else:
                out.append(self.benchmark(m))
        return out

    def send_telemetry(self, reports: list[BenchmarkReport], interval_s: float = 0.0) -> None:
        for r in reports:
            self._report(r)
            self.stats.telemetry_sent += 1
            self.stats.telemetry_ids.append(str(r.message_id))
            if interval_s:
                time.sleep(interval_s)

    def start(self) -> None:
        self.session.start()

    def stop(self) -> None:
        self.session.stop(
            final=(protocol.status_topic(self.fleet, self.device_id), protocol.encode(self._status("offline")), 1, True)
        )


def raise_fd_limit(needed: int) -> None:
    """Every paho client holds a socket and a socket pair (3 descriptors): 500 devices pass the
    usual soft limit of 1024, so lift the soft limit towards the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("file descriptor limit %d is below the %d this fleet needs", target, needed)


class SimFleet:
    def __init__(
        self,
        n: int,
        broker: BrokerSettings,
        fleet: str = "sim",
        model: DeviceModel | None = None,
        prefix: str = "sim",
        seed: int = 0,
        device_certs: Path | None = None,
    ) -> None:
        raise_fd_limit(3 * n + 256)
        width = max(3, len(str(n)))
        ids = [f"{prefix}-{i:0{width}d}" for i in range(n)]
        self.devices = [
            SimDevice(d, fleet, device_broker(broker, device_certs, d, fleet), model or DeviceModel(), seed + i)
            for i, d in enumerate(ids)
        ]

    def start(self, timeout: float = 60.0) -> None:
        for d in self.devices:
            d.start()
        deadline = time.monotonic() + timeout
        for d in self.devices:
            if not d.session.wait_connected(max(0.1, deadline - time.monotonic())):
                raise EdgeloopError(f"simulated device {d.device_id} could not connect to {d.session.settings.url}")

    def stream(self, per_device: int, interval_s: float = 0.0, threads: int = 16) -> int:
        """Every device publishes ``per_device`` reports; a few worker threads share the devices.

        The reports are built before the first one is sent, so the send rate measures MQTT and
        the host rather than the simulator's own JSON encoding.
        """
        prepared = {d.device_id: d.telemetry(per_device) for d in self.devices}
        chunks = [self.devices[i::threads] for i in range(threads)]

        def work(devs: list[SimDevice]) -> None:
            for d in devs:
                d.send_telemetry(prepared[d.device_id], interval_s)

        workers = [threading.Thread(target=work, args=(c,), daemon=True) for c in chunks if c]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(d.stats.telemetry_sent for d in self.devices)

    def wait_acked(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(d.session.stats.acked >= d.session.stats.published for d in self.devices):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        for d in self.devices:
            d.stop()


# paho's network loop uses select(), which cannot watch descriptors >= 1024; each client holds three,
# so one process carries about 330 clients at most (measured: 340 connected, the rest never did).
MAX_DEVICES_PER_PROCESS = 300


def run_shard(args: Any, stop: threading.Event) -> int:
    """One process of simulated devices (the ``edgeloop simulate`` work)."""
    import json

    model = DeviceModel(p50_ms=args.p50_ms, accuracy_drop_points=args.accuracy_drop,
                        deploy_failure_rate=args.fail_rate, respond_delay_s=args.respond_delay)  # fmt: skip
    tls = BrokerTls.from_env(args.broker_ca, args.broker_cert, args.broker_key)
    broker = broker_settings(args.broker, tls, protocol=args.mqtt_protocol)
    certs = Path(args.device_certs) if args.device_certs else None
    fleet = SimFleet(args.devices, broker, args.fleet, model, prefix=args.prefix, device_certs=certs)
    t0 = time.monotonic()
    fleet.start()
    print(f"{args.devices} simulated devices online in fleet {args.fleet} ({time.monotonic() - t0:.1f}s)", flush=True)
    try:
        if args.reports_per_device:
            if args.stream_when:
                while not Path(args.stream_when).exists() and not stop.is_set():
                    time.sleep(0.1)
            t1 = time.monotonic()
            sent = fleet.stream(args.reports_per_device, args.interval)
            acked = fleet.wait_acked()
            dt = time.monotonic() - t1
            ids = {i for d in fleet.devices for i in d.stats.telemetry_ids}
            summary = {
                "prefix": args.prefix,
                "sent": sent,
                "seconds": round(dt, 3),
                "acked": acked,
                "unique_ids": len(ids),
            }
            print(json.dumps(summary), flush=True)
            if args.exit_after_stream:
                return 0 if acked else 1
        stop.wait(args.duration if args.duration else None)
        return 0
    finally:
        fleet.stop()


def run_sharded(args: Any, processes: int, stop: threading.Event) -> int:
    """Split the devices over child processes (see MAX_DEVICES_PER_PROCESS) and wait for them."""
    import subprocess
    import sys

    per = [args.devices // processes + (1 if i < args.devices % processes else 0) for i in range(processes)]
    children = []
    for i, n in enumerate(per):
        argv = _replace_opts(sys.argv[1:], {"--devices": str(n), "--prefix": f"{args.prefix}{i}", "--processes": "1"})
        children.append(subprocess.Popen([sys.executable, "-m", "host.cli", *argv]))  # noqa: S603  (our own argv)
    try:
        while any(c.poll() is None for c in children) and not stop.is_set():
            time.sleep(0.2)
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            c.wait(timeout=60)
    return max(c.returncode or 0 for c in children)


def _replace_opts(argv: list[str], values: dict[str, str]) -> list[str]:
    """argv with the given ``--option value`` pairs replaced (both ``--opt v`` and ``--opt=v`` forms)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in values:
            skip = True
        elif "=" not in a or a.split("=", 1)[0] not in values:
            out.append(a)
    for k, v in values.items():
        out += [k, v]
    return out
