"""Staged rollouts gated on what the devices measure, with automatic rollback.

A rollout has waves (default: a canary of one device, then 25%, then 100% of the fleet; targets
are cumulative). Each wave: send ``deploy`` -> wait for every device's DeployReport and
BenchmarkReport (or the wave timeout) -> gate -> promote the next wave, or abort and roll every
touched device back to the release it ran before. The knobs follow AWS IoT Jobs (rollout rate,
abort criteria as a failure fraction, timeouts) and Greengrass (``ROLLBACK`` on failure).

Per device, a wave counts a failure for: a failed deploy, a missing report at the deadline
(offline devices are named in the summary, never skipped silently), top-1 below
``source_top1 - max_accuracy_drop`` points, or p99 latency over budget. The wave passes when
failures / wave size <= ``abort_failures``.

All state lives in the store; commands are stored before they are published (and re-published
with the same message id if the host died before the PUBACK), so a restarted host resumes where
it stopped without sending a wave twice, and agents drop any duplicate by message id.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from host.fleet.store import Store, now
from shared import protocol
from shared.errors import EdgeloopError
from shared.protocol import BenchSettings, DeployCommand, ReleaseManifest, ReleaseRef, RollbackCommand

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], bool]  # topic, payload -> True once the broker acknowledged it

TERMINAL = ("completed", "aborted", "rolled_back")
FAILED_DEVICE_STATES = ("failed", "timeout", "gate_failed")


class RolloutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waves: list[str] = Field(
        default_factory=lambda: ["1", "25%", "100%"],
        description="cumulative targets: a device count or a percentage of the fleet",
    )
    max_accuracy_drop: float = Field(0.5, ge=0, le=100, description="points of top-1 below the source model")
    p99_budget_ms: float | None = Field(None, gt=0, description="p99 latency budget at batch 1")
    abort_failures: float = Field(0.10, ge=0, le=1, description="failure fraction of a wave that aborts")
    wave_timeout_s: float = Field(600, gt=0)
    precision: protocol.Precision | None = None
    bench: BenchSettings = BenchSettings()

    @field_validator("waves")
    @classmethod
    def _waves(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one wave")
        for w in v:
            parse_target(w, 100)
        return v


def parse_target(spec: str, fleet_size: int) -> int:
    """'1' -> 1 device; '25%' -> ceil(25% of the fleet), at least 1."""
    s = spec.strip()
    try:
        if s.endswith("%"):
            pct = float(s[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, math.ceil(fleet_size * pct / 100))
        n = int(s)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise ValueError(f"wave {spec!r} must be a device count >= 1 or a percentage in (0, 100]") from None


def parse_duration(text: str) -> float:
    """'600', '90s', '10m', '1h' -> seconds."""
    t = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:])
    try:
        return float(t[:-1]) * mult if mult else float(t)
    except ValueError:
        raise EdgeloopError(f"duration {text!r} must look like 600, 90s, 10m or 1h") from None


def plan_waves(device_ids: list[str], specs: list[str]) -> list[list[str]]:
    """Split devices into waves by cumulative targets; empty waves are dropped."""
    waves, done = [], 0
    n = len(device_ids)
    for spec in specs:
        target = min(n, parse_target(spec, n))
        if target > done:
            waves.append(device_ids[done:target])
            done = target
    return waves


class RolloutController:
    def __init__(self, store: Store, publish: Publish, base_url: str, tick_s: float = 0.5) -> None:
        self.store = store
        self.publish = publish
        self.base_url = base_url
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, name="rollout-controller", daemon=True)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep controlling whatever one rollout does
                log.exception("rollout controller tick failed")
            self._stop.wait(self.tick_s)

    # -- API ---------------------------------------------------------------------------------
    def create(self, manifest: ReleaseManifest, fleet: str, config: RolloutConfig) -> str:
        protocol.check_id(fleet, "fleet")
        busy = [r for r in self.store.rollouts() if r["fleet"] == fleet and r["state"] not in TERMINAL]
        if busy:
            raise EdgeloopError(f"fleet {fleet} already has rollout {busy[0]['id']} in progress; abort it first")
        fleet_devices = self.store.devices(fleet)
        if not fleet_devices:
            raise EdgeloopError(f"fleet {fleet!r} has no known devices (none has reported a status yet)")
        self.store.add_release(manifest)
        ordered = sorted(fleet_devices, key=lambda d: (d["state"] != "online", d["device_id"]))  # canary: online first
        waves = plan_waves([d["device_id"] for d in ordered], config.waves)
        by_id = {d["device_id"]: d for d in fleet_devices}
        members = [
            [
                {
                    "device_id": dev,
                    "previous_name": by_id[dev]["release_name"],
                    "previous_version": by_id[dev]["release_version"],
                    "was_online": by_id[dev]["state"] != "offline",
                }
                for dev in wave
            ]
            for wave in waves
        ]
        rollout_id = f"ro-{uuid.uuid4().hex[:12]}"
        self.store.create_rollout(rollout_id, manifest, fleet, config.model_dump(mode="json"), members)
        offline = [d["device_id"] for d in fleet_devices if d["state"] == "offline"]
        log.info(
            "rollout %s of %s to %s: waves %s%s",
            rollout_id,
            manifest.ref,
            fleet,
            [len(w) for w in waves],
            f"; offline now: {', '.join(offline)}" if offline else "",
        )
        return rollout_id

    def abort(self, rollout_id: str, reason: str = "aborted by user") -> None:
        r = self._get(rollout_id)
        if r["state"] in TERMINAL:
            raise EdgeloopError(f"rollout {rollout_id} is already {r['state']}")
        self._begin_rollback(r, reason)

    def rollback(self, rollout_id: str, reason: str = "rollback requested") -> None:
        """Roll back every device a finished (or running) rollout touched."""
        r = self._get(rollout_id)
        if r["state"] in ("aborted", "rolled_back"):
            raise EdgeloopError(f"rollout {rollout_id} was already {r['state']}")
        self._begin_rollback(r, reason)

    def _get(self, rollout_id: str) -> dict[str, Any]:
        r = self.store.rollout(rollout_id)
        if r is None:
            raise EdgeloopError(f"no rollout {rollout_id!r}")
        return r

    # -- the state machine ---------------------------------------------------------------------
    def tick(self) -> None:
        with self._lock:
            for r in self.store.rollouts():
                if r["state"] in ("running", "rolling_back"):
                    full = self.store.rollout(r["id"])
                    if full is not None:
                        self._advance(full)

    def _advance(self, r: dict[str, Any]) -> None:
        self._republish(r)
        if r["state"] == "rolling_back":
            self._watch_rollback(r)
            return
        cfg = RolloutConfig.model_validate(r["config"])
        wave = r["waves"][r["current_wave"]]
        members = [d for d in r["devices"] if d["wave"] == wave["wave"]]
        manifest = self.store.release(r["release_name"], r["release_version"])
        if manifest is None:
            self._finish(r, "aborted", "release manifest missing from the store")
            return
        if wave["state"] == "pending":
            self._send_wave(r, wave, members, manifest, cfg)
        elif wave["state"] == "sent":
            self._collect(r, members, manifest, cfg)
            members = [d for d in (self.store.rollout(r["id"]) or r)["devices"] if d["wave"] == wave["wave"]]
            self._maybe_gate(r, wave, members, cfg)

    def _send_wave(
        self,
        r: dict[str, Any],
        wave: dict[str, Any],
        members: list[dict[str, Any]],
        manifest: ReleaseManifest,
        cfg: RolloutConfig,
    ) -> None:
        t = now()
        self.store.update_wave(
            r["id"], wave["wave"], state="sent", started_at=t, deadline=t + timedelta(seconds=cfg.wave_timeout_s)
        )
        for d in members:
            cmd = DeployCommand(
                device_id=d["device_id"],
                manifest=manifest,
                base_url=self.base_url,
                rollout_id=r["id"],
                precision=cfg.precision,
                bench=cfg.bench,
            )
            self._send(r, d["device_id"], cmd, "sent")
        log.info(
            "rollout %s wave %d: deploy sent to %s", r["id"], wave["wave"], ", ".join(d["device_id"] for d in members)
        )

    def _send(self, r: dict[str, Any], device_id: str, cmd: DeployCommand | RollbackCommand, state: str) -> None:
        payload = protocol.encode(cmd)
        # stored first: if we die before the PUBACK, the resumed host re-sends this same message id
        self.store.update_rollout_device(
            r["id"], device_id, state=state, command_id=str(cmd.message_id), command=payload.decode(), published=False
        )
        if self.publish(protocol.command_topic(r["fleet"], device_id), payload):
            self.store.update_rollout_device(r["id"], device_id, published=True)

    def _republish(self, r: dict[str, Any]) -> None:
        for d in r["devices"]:
            if d["command"] and not d["published"] and d["state"] in ("sent", "rolling_back"):
                log.info("re-sending stored command %s to %s", d["command_id"], d["device_id"])
                if self.publish(protocol.command_topic(r["fleet"], d["device_id"]), d["command"].encode()):
                    self.store.update_rollout_device(r["id"], d["device_id"], published=True)

    def _collect(
        self, r: dict[str, Any], members: list[dict[str, Any]], manifest: ReleaseManifest, cfg: RolloutConfig
    ) -> None:
        pending = {d["command_id"]: d for d in members if d["state"] in ("sent", "deployed")}
        if not pending:
            return
        deploys = {x["command_id"]: x["payload"] for x in self.store.reports_for_commands(pending, "deploy")}
        benches = {x["command_id"]: x["payload"] for x in self.store.reports_for_commands(pending, "benchmark")}
        floor = manifest.model.source_top1 - cfg.max_accuracy_drop / 100
        for cid, d in pending.items():
            dep, bench = deploys.get(cid), benches.get(cid)
            if dep is None:
                continue
            if not dep["ok"]:
                self.store.update_rollout_device(r["id"], d["device_id"], state="failed", error=dep.get("error"))
                continue
            prev = dep.get("previous_release")
            if prev and (prev["name"], prev["version"]) != (manifest.name, manifest.version):
                self.store.update_rollout_device(
                    r["id"], d["device_id"], previous_name=prev["name"], previous_version=prev["version"]
                )
            if bench is None:
                if d["state"] != "deployed":
                    self.store.update_rollout_device(r["id"], d["device_id"], state="deployed")
                continue
            top1, p99 = bench.get("top1"), bench["latency_ms"]["p99"]
            problems = []
            if top1 is not None and top1 < floor:
                problems.append(
                    f"top-1 {100 * top1:.2f}% < gate {100 * floor:.2f}% "
                    f"(source {100 * manifest.model.source_top1:.2f}% - {cfg.max_accuracy_drop} pts)"
                )
            if top1 is None and cfg.max_accuracy_drop < 100:
                problems.append("device reported no accuracy (no eval set configured)")
            if cfg.p99_budget_ms is not None and p99 > cfg.p99_budget_ms:
                problems.append(f"p99 {p99:.3f} ms > budget {cfg.p99_budget_ms} ms")
            self.store.update_rollout_device(
                r["id"],
                d["device_id"],
                state="gate_failed" if problems else "passed",
                top1=top1,
                p99_ms=p99,
                error="; ".join(problems) or None,
            )

    def _maybe_gate(
        self, r: dict[str, Any], wave: dict[str, Any], members: list[dict[str, Any]], cfg: RolloutConfig
    ) -> None:
        unresolved = [d for d in members if d["state"] in ("sent", "deployed")]
        deadline = wave["deadline"]
        if unresolved and deadline is not None and now() < deadline:
            return
        for d in unresolved:
            why = "no report before the wave timeout" + ("" if d["was_online"] else " (device was offline)")
            self.store.update_rollout_device(r["id"], d["device_id"], state="timeout", error=why)
            d["state"], d["error"] = "timeout", why
        failed = [d for d in members if d["state"] in FAILED_DEVICE_STATES]
        fraction = len(failed) / max(1, len(members))
        top1s = [d["top1"] for d in members if d.get("top1") is not None]
        summary: dict[str, Any] = {
            "devices": len(members),
            "failed": [{"device_id": d["device_id"], "state": d["state"], "error": d["error"]} for d in failed],
            "failure_fraction": fraction,
            "mean_top1": sum(top1s) / len(top1s) if top1s else None,
            "offline": [d["device_id"] for d in members if not d["was_online"]],
        }
        passed = fraction <= cfg.abort_failures
        self.store.update_wave(
            r["id"], wave["wave"], state="passed" if passed else "failed", finished_at=now(), summary=summary
        )
        if not passed:
            reasons = "; ".join(f"{f['device_id']}: {f['error'] or f['state']}" for f in summary["failed"])
            log.warning(
                "rollout %s wave %d failed (%.0f%% > %.0f%%): %s",
                r["id"],
                wave["wave"],
                100 * fraction,
                100 * cfg.abort_failures,
                reasons,
            )
            self._begin_rollback(r, f"wave {wave['wave']} failed its gate: {reasons}")
            return
        log.info("rollout %s wave %d passed (%d devices)", r["id"], wave["wave"], len(members))
        if r["current_wave"] + 1 < len(r["waves"]):
            self.store.update_rollout(r["id"], current_wave=r["current_wave"] + 1)
        else:
            self._finish(r, "completed", "")

    def _finish(self, r: dict[str, Any], state: str, reason: str) -> None:
        self.store.update_rollout(r["id"], state=state, reason=reason)
        log.info("rollout %s %s%s", r["id"], state, f": {reason}" if reason else "")

    # -- rollback ------------------------------------------------------------------------------
    def _begin_rollback(self, r: dict[str, Any], reason: str) -> None:
        self.store.update_rollout(r["id"], state="rolling_back", reason=reason)
        r = self.store.rollout(r["id"]) or r
        touched = [d for d in r["devices"] if d["state"] not in ("pending",)]
        for d in touched:
            if d["state"] in ("rolled_back", "rolling_back", "no_previous"):
                continue
            if not d["previous_name"] or not d["previous_version"]:
                self.store.update_rollout_device(
                    r["id"],
                    d["device_id"],
                    state="no_previous",
                    error="device ran no release before; nothing to roll back to",
                )
                continue
            target = ReleaseRef(name=d["previous_name"], version=d["previous_version"])
            if (target.name, target.version) == (r["release_name"], r["release_version"]):
                continue
            cmd = RollbackCommand(
                device_id=d["device_id"],
                target=target,
                manifest=self.store.release(target.name, target.version),
                base_url=self.base_url,
                rollout_id=r["id"],
                reason=reason[:1000],
            )
            self._send(r, d["device_id"], cmd, "rolling_back")
        log.warning("rollout %s: rolling back %d device(s): %s", r["id"], len(touched), reason)

    def _watch_rollback(self, r: dict[str, Any]) -> None:
        waiting = {d["command_id"]: d for d in r["devices"] if d["state"] == "rolling_back"}
        if waiting:
            for x in self.store.reports_for_commands(waiting, "deploy"):
                d = waiting.pop(x["command_id"], None)
                if d is not None:
                    ok = x["payload"]["ok"]
                    self.store.update_rollout_device(
                        r["id"],
                        d["device_id"],
                        state="rolled_back" if ok else "rollback_failed",
                        error=None if ok else x["payload"].get("error"),
                    )
            stale = now() - r["updated_at"].replace(tzinfo=r["updated_at"].tzinfo or now().tzinfo)
            cfg = RolloutConfig.model_validate(r["config"])
            if waiting and stale.total_seconds() < cfg.wave_timeout_s:
                return
            for d in waiting.values():
                self.store.update_rollout_device(r["id"], d["device_id"], state="rollback_timeout")
        self._finish(r, "rolled_back", r["reason"])
