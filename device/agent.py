"""The device daemon: receives commands over MQTT, activates releases, benchmarks, reports.

Threads: paho's network thread (callbacks only enqueue), one command worker (commands run one at
a time, in order), the outbox pump, and the heartbeat in the main thread. A bad message is logged,
counted and answered with an EventReport; nothing a message contains can stop the daemon.
"""

from __future__ import annotations

import logging
import queue
import random
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from device import bench, sysinfo
from device.activation import ActivationError, EngineManager, prep_of
from device.builder import EngineCache
from device.config import AgentConfig
from device.outbox import Outbox, OutboxPump
from device.state import AgentState
from shared import datasets, protocol
from shared.errors import EdgeloopError
from shared.mqtt import MqttSession
from shared.protocol import (
    BenchmarkCommand,
    BenchmarkReport,
    BenchSettings,
    DeployCommand,
    DeployReport,
    DeviceStatus,
    EventReport,
    LatencyStats,
    RecalibrateCommand,
    RollbackCommand,
    SampleCommand,
    WireModel,
)
from shared.samples import golden_dir

log = logging.getLogger(__name__)


def agent_version() -> str:
    try:
        return metadata.version("edgeloop")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.device_id, self.fleet = config.device_id, config.fleet
        self.state = AgentState(config.state_dir)
        self.engines = EngineManager(config, self.state, EngineCache(config.state_dir / "engines"))
        self.outbox = Outbox(config.state_dir / "outbox.sqlite")
        self.counters: dict[str, int] = {"commands": 0, "bad_commands": 0, "duplicates": 0, "errors": 0}
        self._commands: queue.Queue[bytes | None] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._status_due = threading.Event()
        self._busy = False
        self._status_topic = protocol.status_topic(self.fleet, self.device_id)
        self._command_topic = protocol.command_topic(self.fleet, self.device_id)
        self.session = MqttSession(
            config.broker.settings(),
            client_id=f"edgeloop-{self.fleet}-{self.device_id}",
            subscriptions=[(self._command_topic, 1)],
            on_message=self._on_message,
            will=(self._status_topic, protocol.encode(self._status("offline", system=False)), 1, True),
            on_connected=self._on_connected,
            on_published=lambda mid: self.pump.on_published(mid),  # noqa: PLW0108  (pump is made below)
        )
        self.pump = OutboxPump(self.outbox, self.session)
        self._handlers: dict[str, Callable[[Any], None]] = {
            "deploy": self._deploy,
            "benchmark": self._benchmark,
            "rollback": self._rollback,
            "sample": self._sample,
            "recalibrate": self._recalibrate,
        }
        self._worker = threading.Thread(target=self._work, name="commands", daemon=True)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.engines.restore()
        self.pump.start()
        self._worker.start()
        self.session.start()
        log.info(
            "agent %s/%s started (broker %s, state %s)",
            self.fleet,
            self.device_id,
            self.session.settings.url,
            self.config.state_dir,
        )

    def run(self, stop: threading.Event | None = None) -> None:
        """Start, then send heartbeats until ``stop`` (or ``self.stop()``) is set."""
        stop = stop or self._stop
        self.start()
        next_beat = time.monotonic() + self.config.status_interval_s
        while not stop.is_set() and not self._stop.is_set():
            stop.wait(0.2)
            if self._status_due.is_set():
                self._status_due.clear()
                self.publish_status()
                next_beat = time.monotonic() + self.config.status_interval_s
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.config.status_interval_s
                self.publish_status()
        self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._commands.put(None)
        self._worker.join(timeout=30)
        self.pump.stop()
        offline = protocol.encode(self._status("offline", system=False))
        self.session.stop(final=(self._status_topic, offline, 1, True))
        self.engines.close()
        self.outbox.close()
        log.info("agent stopped")

    # -- MQTT side (network thread): enqueue only ---------------------------------------------
    def _on_connected(self) -> None:
        # runs on paho's network thread: only flag the work (collecting telemetry may run
        # tegrastats for a moment), the main loop publishes the "online" status
        self._status_due.set()
        self.pump.outbox.added.set()  # flush what piled up while offline

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic != self._command_topic:
            # only a misbehaving broker routes other topics here (amqtt was seen doing it with
            # retained status messages): drop and count, it is not a malformed command
            self.counters["foreign_messages"] = self.counters.get("foreign_messages", 0) + 1
            log.warning("ignoring a message on %s (subscribed to %s only)", topic, self._command_topic)
            return
        try:
            self._commands.put_nowait(payload)
        except queue.Full:
            self.counters["bad_commands"] += 1
            log.error("command queue full; dropping a command")

    # -- status & reports -------------------------------------------------------------------
    def _status(self, state: str, system: bool = True) -> DeviceStatus:
        d = self.engines.describe()
        return DeviceStatus(
            device_id=self.device_id,
            fleet=self.fleet,
            state=state,
            release=d["release"],
            previous_release=d["previous_release"],
            runtime=d["runtime"],
            runtime_version=d["runtime_version"],
            precision=d["precision"],
            accelerator=d["accelerator"],
            gpu=d["gpu"],
            agent_version=agent_version(),
            system=sysinfo.collect(d["gpu_mem_mb"]) if system else None,
        )

    def publish_status(self) -> None:
        if not self.session.connected.is_set():
            return
        try:
            status = self._status("busy" if self._busy else "online")
            self.session.publish(self._status_topic, protocol.encode(status), qos=1, retain=True)
        except Exception:
            log.exception("could not publish status")

    def report(self, message: WireModel) -> None:
        kind = getattr(message, "kind")  # noqa: B009  (every report model has a kind literal)
        topic = protocol.report_topic(self.fleet, self.device_id, kind)
        self.outbox.put(topic, protocol.encode(message), str(getattr(message, "message_id")))  # noqa: B009

    def event(self, level: str, code: str, message: str, **kw: Any) -> None:
        log.log(logging.ERROR if level == "error" else logging.INFO, "event %s: %s", code, message)
        self.report(EventReport(device_id=self.device_id, level=level, code=code, message=message[:4000], **kw))

    # -- command worker ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            payload = self._commands.get()
            if payload is None:
                return
            self.handle(payload)

    def handle(self, payload: bytes) -> None:
        """Process one raw command. Never raises."""
        self.counters["commands"] += 1
        try:
            cmd = protocol.decode_command(payload)
        except EdgeloopError as e:
            self.counters["bad_commands"] += 1
            self.event("error", "malformed_command", f"{e} (payload starts {payload[:60]!r})")
            return
        ids = {"command_id": cmd.message_id, "rollout_id": getattr(cmd, "rollout_id", None)}
        if cmd.device_id != self.device_id:
            self.counters["bad_commands"] += 1
            self.event(
                "error", "wrong_device", f"command addressed to {cmd.device_id!r}, not {self.device_id!r}", **ids
            )
            return
        if not self.outbox.first_time(str(cmd.message_id)):
            self.counters["duplicates"] += 1
            log.info("ignoring redelivered command %s", cmd.message_id)
            return
        self._busy = True
        self.publish_status()
        try:
            self._handlers[cmd.kind](cmd)
        except ActivationError as e:
            self.event("error", e.code, str(e), **ids)
        except EdgeloopError as e:
            self.event("error", "command_failed", str(e), **ids)
        except Exception as e:
            self.counters["errors"] += 1
            log.exception("internal error handling %s", cmd.kind)
            self.event("error", "internal_error", f"{type(e).__name__}: {e}", **ids)
        finally:
            self._busy = False
            self.publish_status()

    # -- handlers ---------------------------------------------------------------------------
    def _deploy(self, cmd: DeployCommand) -> None:
        self._activate(cmd.manifest, cmd.base_url, cmd, action="deploy", precision=cmd.precision)

    def _rollback(self, cmd: RollbackCommand) -> None:
        target = cmd.target or (self.state.previous.ref if self.state.previous else None)
        if target is None:
            raise ActivationError("rollback_target_unknown", "no previous release to roll back to")
        manifest = cmd.manifest or self.state.load_manifest(target)
        if manifest is None or manifest.ref != target:
            raise ActivationError(
                "rollback_target_unknown", f"no manifest for {target} on this device or in the command"
            )
        self._activate(manifest, cmd.base_url, cmd, action="rollback")

    def _activate(
        self,
        manifest: protocol.ReleaseManifest,
        base_url: str | None,
        cmd: DeployCommand | RollbackCommand,
        action: str,
        precision: Any = None,
    ) -> None:
        previous = self.state.current.ref if self.state.current else None
        common = {
            "device_id": self.device_id,
            "rollout_id": cmd.rollout_id,
            "command_id": cmd.message_id,
            "release": manifest.ref,
            "action": action,
        }
        try:
            act = self.engines.activate(manifest, base_url, precision, rollback=(action == "rollback"))
        except ActivationError as e:
            self.event(
                "error", e.code, str(e), command_id=cmd.message_id, rollout_id=cmd.rollout_id, release=manifest.ref
            )
            self.report(DeployReport(ok=False, error=str(e)[:4000], previous_release=previous, **common))
            return
        self.report(
            DeployReport(
                ok=True,
                previous_release=act.previous if not act.already_active else previous,
                artifact=act.slot.artifact,
                runtime=act.runtime_name,
                runtime_version=act.runtime_version,
                precision=act.slot.precision,
                accelerator=act.accelerator,
                cache_hit=act.cache_hit,
                fetch_s=act.fetch_s,
                build_s=act.build_s,
                selftest_top1=act.selftest_top1,
                **common,
            )
        )
        self.publish_status()
        if isinstance(cmd, DeployCommand):
            self.report(self.run_benchmark(cmd.bench, cmd.rollout_id, cmd.message_id))

    def _benchmark(self, cmd: BenchmarkCommand) -> None:
        self.report(self.run_benchmark(cmd.bench, cmd.rollout_id, cmd.message_id))

    def run_benchmark(
        self, settings: BenchSettings, rollout_id: str | None = None, command_id: Any = None
    ) -> BenchmarkReport:
        with self.engines.active() as (rt, manifest, slot):
            lat = bench.measure_latency(
                rt, batch=settings.batch, warmup=settings.warmup, iterations=settings.iterations
            )
            raw = bench.throughput_rounds(rt, batch=settings.throughput_batch, rounds=settings.throughput_rounds)
            top1 = n_images = e2e = None
            if settings.evaluate and self.config.eval_dir is not None:
                samples = datasets.list_samples(self.config.eval_dir)
                limit = settings.eval_limit or self.config.eval_limit
                if limit:
                    samples = datasets.balanced_subset(samples, limit)
                ev = bench.evaluate(rt, samples, manifest.model.classes, prep_of(manifest))
                top1, n_images, e2e = ev.top1, ev.n_images, ev.throughput_ips
            return BenchmarkReport(
                device_id=self.device_id,
                rollout_id=rollout_id,
                command_id=command_id,
                release=slot.ref,
                runtime=rt.name,
                runtime_version=rt.version(),
                precision=slot.precision,
                accelerator=rt.accelerator(),
                batch=settings.batch,
                iterations=settings.iterations,
                latency_ms=LatencyStats(**lat.latency_ms),
                raw_throughput_ips=statistics.median(raw),
                top1=top1,
                n_images=n_images,
                end_to_end_throughput_ips=e2e,
                system=sysinfo.collect(rt.gpu_memory_mb()),
            )

    def _sample(self, cmd: SampleCommand) -> None:
        source = self.config.field_dir or self.config.eval_dir or golden_dir()
        files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in datasets.IMAGE_SUFFIXES)
        if not files:
            raise EdgeloopError(f"no field images under {source}")
        picked = random.sample(files, min(cmd.n_images, len(files)))
        for path in picked:
            req = urllib.request.Request(  # noqa: S310  (URL pattern-checked http(s))
                cmd.upload_url,
                data=path.read_bytes(),
                method="POST",
                headers={
                    "Content-Type": "application/octet-stream",
                    "X-Edgeloop-Device": self.device_id,
                    "X-Edgeloop-Fleet": self.fleet,
                    "X-Edgeloop-Filename": path.name,
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=self.config.http_timeout_s):  # noqa: S310
                    pass
            except OSError as e:
                raise EdgeloopError(f"upload to {cmd.upload_url} failed: {e}") from e
        self.event("info", "samples_uploaded", f"uploaded {len(picked)} field images", command_id=cmd.message_id)

    def _recalibrate(self, cmd: RecalibrateCommand) -> None:
        self.event(
            "warning", "not_supported", "recalibrate is not supported by this agent version", command_id=cmd.message_id
        )
