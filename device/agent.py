"""The device daemon: receives commands over MQTT, activates releases, benchmarks, serves, reports.

Threads: paho's network thread (callbacks only enqueue), one command worker (commands run one at
a time, in order, by their ``device.commands`` handler), the outbox pump, serving's own threads
(HTTP, batcher, frame source) when ``[inference]`` is configured, and the heartbeat (status and
telemetry) in the main thread. A bad message is logged, counted and answered with an EventReport;
nothing a message contains can stop the daemon.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from importlib import metadata
from typing import Any

from device import commands
from device.activation import ActivationError, EngineManager
from device.admission import Admission, CommandRefusedError
from device.config import AgentConfig
from device.engine import sysinfo
from device.engine.builder import EngineCache
from device.engine.runtimes import registry
from device.engine.runtimes.base import RuntimeConfig
from device.outbox import Outbox, OutboxPump
from device.serving.daemon import AgentServing
from device.state import AgentState
from device.watchdog import Watchdog
from shared import protocol
from shared.errors import EdgeloopError
from shared.mqtt import MqttSession
from shared.protocol import ClassificationResult, CommandCounts, DeviceStatus, EventReport, WireModel

log = logging.getLogger(__name__)


def agent_version() -> str:
    try:
        return metadata.version("edgeloop")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def runtime_warnings(config: RuntimeConfig) -> tuple[str, ...]:
    """A backend this machine is made for that cannot run here (TensorRT on a Jetson), logged as a WARNING
    with the reason and the fix: the status carries the same, so the fleet sees it too."""
    found = registry.expected_but_unavailable(config)
    for warning in found:
        log.warning("%s", warning)
    return tuple(w[:512] for w in found[:8])  # DeviceStatus.warnings' bounds


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.device_id, self.fleet = config.device_id, config.fleet
        self.state = AgentState(config.state_dir)
        self.engines = EngineManager(config, self.state, EngineCache(config.state_dir / "engines"))
        self.warnings = runtime_warnings(config.runtime)
        self.outbox = Outbox(config.state_dir / "outbox.sqlite")
        self.admission = Admission(config, self.outbox)
        self.counters: dict[str, int] = {
            "received": 0,
            "commands": 0,
            "bad_commands": 0,
            "duplicates": 0,
            "handled": 0,
            "errors": 0,
        }
        self._commands: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
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
        self.serving = (
            AgentServing(config.inference, config.state_dir, self.device_id) if config.inference is not None else None
        )
        self._result_topic = protocol.result_topic(self.fleet, self.device_id)
        self._worker = threading.Thread(target=self._work, name="commands", daemon=True)
        self.watchdog = Watchdog()
        self.watchdog.watch("commands", self._worker_alive, self._restart_worker)
        self.watchdog.watch("outbox", self.pump.alive, self.pump.restart)
        if self.serving is not None:
            batcher = self.serving.server.batcher
            self.watchdog.watch("batcher", batcher.alive, batcher.restart)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.serving is not None:  # before restore(), so the restored engine is served too
            self.engines.on_swap, self.engines.close_replaced = self.serving.serve, False
            self.serving.start(self._publish_result)
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
        interval = self.config.inference.telemetry_interval_s if self.config.inference else None
        next_telemetry = time.monotonic() + (interval or 0)
        while not stop.is_set() and not self._stop.is_set():
            stop.wait(0.2)
            if self._status_due.is_set():
                self._status_due.clear()
                self.publish_status()
                next_beat = time.monotonic() + self.config.status_interval_s
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.config.status_interval_s
                self.publish_status()
            for name in self.watchdog.check():
                self.event("error", "worker_restarted", f"the {name} worker had died and was restarted")
                self._status_due.set()
            if interval is not None and time.monotonic() >= next_telemetry:
                next_telemetry = time.monotonic() + interval
                self.report_telemetry()
        self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _worker_alive(self) -> bool:
        return self._worker.is_alive() or self._stop.is_set()

    def _restart_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="commands", daemon=True)
        self._worker.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._commands.put(None)
        self._worker.join(timeout=30)
        if self.serving is not None:
            self.serving.stop()
            self.report_telemetry()  # the last interval, into the outbox (sent now or after restart)
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
        self.counters["received"] += 1
        if len(payload) > self.config.max_command_kb * 1024:  # never queued: 64 of them would be memory
            self.counters["bad_commands"] += 1
            self.counters["command_too_large"] = self.counters.get("command_too_large", 0) + 1
            log.error("dropping a %d-byte command (limit %d KB)", len(payload), self.config.max_command_kb)
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
            watchdog_restarts=self.watchdog.total if hasattr(self, "watchdog") else 0,
            commands=self._command_counts(),
            system=sysinfo.collect(d["gpu_mem_mb"]) if system else None,
            warnings=self.warnings,
        )

    def _command_counts(self) -> CommandCounts:
        c = self.counters
        clip = 2**31 - 1
        return CommandCounts(
            received=min(c["received"], clip),
            rejected=min(c["bad_commands"], clip),
            duplicates=min(c["duplicates"], clip),
            handled=min(c["handled"], clip),
            queued=self._commands.qsize(),
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
        # a report that answers a command is kept with it: a repeat of the command is answered again
        cid = getattr(message, "command_id", None)
        answers = str(cid) if cid is not None and kind != "event" else None
        self.outbox.put(topic, protocol.encode(message), str(getattr(message, "message_id")), answers=answers)  # noqa: B009

    def report_telemetry(self) -> None:
        """The serving telemetry of the interval that ends now (nothing when nothing was served)."""
        if self.serving is None:
            return
        try:
            d = self.engines.describe()
            report = self.serving.telemetry(d["release"], d["runtime"], d["precision"])
        except Exception:  # telemetry must never stop the heartbeat
            log.exception("could not make the telemetry report")
            return
        if report is not None:
            self.report(report)

    def _publish_result(self, result: ClassificationResult) -> None:
        """A frame source's answer, QoS 0 straight to the broker (stale answers are worth nothing later)."""
        if self.session.connected.is_set():
            self.session.publish(self._result_topic, protocol.encode(result), qos=0)

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
            cmd = self.admission.admit(payload)
        except CommandRefusedError as e:
            if e.duplicate:  # a redelivery, a resend or a replay: nothing runs twice
                self.counters["duplicates"] += 1
                cid = e.ids.get("command_id")
                again = self.outbox.answer_again(str(cid)) if cid is not None else 0
                if again:  # the host did not hear the answer (a lost report, or a lost command it resent)
                    log.info("command %s came again: its %d report(s) sent again, nothing run twice", cid, again)
                # and the host hears of it (a resend of its own, or a replay by someone else: the same bytes)
                self.event("info" if again else "warning", e.code, str(e), **e.ids)
                return
            self.counters["bad_commands"] += 1
            self.counters[e.code] = self.counters.get(e.code, 0) + 1
            self.event("error", e.code, str(e), **e.ids)
            return
        ids = {"command_id": cmd.message_id, "rollout_id": getattr(cmd, "rollout_id", None)}
        self._busy = True
        self.counters["handled"] += 1
        self.publish_status()
        try:
            commands.handler_for(cmd.kind).handle(self, cmd)
        except ActivationError as e:
            self.event("error", e.code, str(e), **ids)
        except EdgeloopError as e:
            self.event("error", "command_failed", str(e), **ids)
        except Exception as e:  # a bug of ours: reported, counted, and the thread lives on
            self.counters["errors"] += 1
            log.exception("internal error handling %s", cmd.kind)
            self.event("error", "internal_error", f"{type(e).__name__}: {e}", **ids)
        finally:
            self._busy = False
            self.publish_status()
