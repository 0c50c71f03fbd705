"""The rollout controller: a state machine over the store, advanced by a background tick.

With several ``serve`` replicas on one store, each runs a controller, and only the one whose replica
holds the controller lease (``host.fleet.replica``) ticks; its writes are fenced (``store.fencing``).
Any replica's API may start a rollout (the holder sends its waves) or ask for an abort or a rollback
(a state change that the holder carries out: it sends the rollback commands).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from datetime import timedelta
from typing import Protocol, TypeVar

from host.fleet.rollout import gates
from host.fleet.rollout.commands import CommandSender, Publish
from host.fleet.rollout.rollback import Rollbacks
from host.fleet.rollout_config import RolloutConfig, plan_waves
from host.fleet.signer import CommandSigner
from host.fleet.store import Store, fencing, now
from host.fleet.store.fencing import Fence, LeaseLostError
from host.fleet.store.records import (
    ACTIVE,
    AWAITING_REPORTS,
    ROLLOUT_STATES,
    TERMINAL,
    UNDONE,
    DeviceRecord,
    RolloutDetail,
    RolloutDeviceRecord,
    RolloutMember,
    RolloutRecord,
    RolloutState,
    WaveRecord,
)
from shared import protocol
from shared.errors import EdgeloopError
from shared.protocol import BenchmarkReport, DeployCommand, DeployReport, ReleaseManifest

GateReport = TypeVar("GateReport", DeployReport, BenchmarkReport)

log = logging.getLogger(__name__)


class ControllerLease(Protocol):
    def check(self) -> tuple[bool, Fence | None]:
        """Whether this replica may drive rollouts now, and the fence its writes carry (one snapshot)."""
        ...


class SingleProcess:
    """No lease: the controller of a process that is alone on its store (a library user, a unit test)."""

    def check(self) -> tuple[bool, Fence | None]:
        return True, None


def _made_for(manifest: ReleaseManifest, devices: list[DeviceRecord], named: bool) -> list[DeviceRecord]:
    """The ship rule (``host.fleet.ship``): a release made for some runtimes skips the devices that run another
    one now (they would refuse it, and a refusal counts as a failed deploy); devices named with ``devices``
    are asked anyway (they may have one of those runtimes installed)."""
    if manifest.runtimes is None or named:
        return devices
    elsewhere = [d for d in devices if d.runtime and not manifest.ships_to(d.runtime)]
    if not elsewhere:
        return devices
    made_for = ", ".join(manifest.runtimes)
    kept = [d for d in devices if d not in elsewhere]
    if not kept:
        raise EdgeloopError(
            f"release {manifest.ref} is made for {made_for}, and every device of the fleet runs another runtime "
            "(name devices that have one with --devices to ask them anyway)"
        )
    log.warning("release %s is made for %s: left out %s, which run another runtime now",
                manifest.ref, made_for, ", ".join(f"{d.device_id} ({d.runtime})" for d in elsewhere[:10]))  # fmt: skip
    return kept


def _member(d: DeviceRecord) -> RolloutMember:
    return RolloutMember(d.device_id, d.release_name, d.release_version, was_online=d.state != "offline")


class RolloutController:
    def __init__(
        self,
        store: Store,
        publish: Publish,
        base_url: str,
        tick_s: float = 0.5,
        signer: CommandSigner | None = None,
        lease: ControllerLease | None = None,
    ) -> None:
        self.store = store
        self.lease: ControllerLease = lease or SingleProcess()
        self.base_url = base_url
        self.tick_s = tick_s
        self.sender = CommandSender(store, publish, signer or CommandSigner(None))
        self.rollbacks = Rollbacks(store, self.sender, base_url)
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
        busy = [r for r in self.store.rollouts() if r.fleet == fleet and r.state not in TERMINAL]
        if busy:
            raise EdgeloopError(f"fleet {fleet} already has rollout {busy[0].id} in progress; abort it first")
        fleet_devices = self.store.devices(fleet)
        if not fleet_devices:
            raise EdgeloopError(f"fleet {fleet!r} has no known devices (none has reported a status yet)")
        if config.devices is not None:  # a rollout to some devices of the fleet: each must be one of them
            unknown = sorted(set(config.devices) - {d.device_id for d in fleet_devices})
            if unknown:
                raise EdgeloopError(f"fleet {fleet!r} has no device {', '.join(unknown[:10])}")
            fleet_devices = [d for d in fleet_devices if d.device_id in set(config.devices)]
        fleet_devices = _made_for(manifest, fleet_devices, named=config.devices is not None)
        self.store.add_release(manifest)
        ordered = sorted(fleet_devices, key=lambda d: (d.state != "online", d.device_id))  # canary: online first
        by_id = {d.device_id: d for d in fleet_devices}
        waves = plan_waves([d.device_id for d in ordered], config.waves)
        rollout_id = f"ro-{uuid.uuid4().hex[:12]}"
        self.store.create_rollout(
            rollout_id, manifest, fleet, config, [[_member(by_id[dev]) for dev in wave] for wave in waves]
        )
        offline = [d.device_id for d in fleet_devices if d.state == "offline"]
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
        if r.state in TERMINAL:
            raise EdgeloopError(f"rollout {rollout_id} is already {r.state}")
        self._roll_back(r.id, reason, ACTIVE)

    def rollback(self, rollout_id: str, reason: str = "rollback requested") -> None:
        """Roll back every device a finished (or running) rollout touched."""
        r = self._get(rollout_id)
        if r.state in UNDONE:
            raise EdgeloopError(f"rollout {rollout_id} was already {r.state}")
        self._roll_back(r.id, reason, frozenset(ROLLOUT_STATES) - UNDONE)

    def _roll_back(self, rollout_id: str, reason: str, only_if: frozenset[RolloutState]) -> None:
        """Mark the rollout rolling back (if it is still in ``only_if``: another replica may have moved it);
        the lease holder sends the rollbacks, now if that is this replica, else on its next tick."""
        with self._lock:
            if not self.store.update_rollout(rollout_id, state="rolling_back", reason=reason, only_if=only_if):
                raise EdgeloopError(f"rollout {rollout_id} is already {self._get(rollout_id).state}")
            log.warning("rollout %s: rolling back: %s", rollout_id, reason)
            held, fence = self.lease.check()
            if held:
                try:
                    with fencing.fenced(fence):
                        self.rollbacks.send_pending(self._get(rollout_id))
                except LeaseLostError as e:  # the replica that holds it now sends them
                    log.warning("rollout %s: rollbacks left to the lease holder: %s", rollout_id, e)

    def _get(self, rollout_id: str) -> RolloutDetail:
        r = self.store.rollout(rollout_id)
        if r is None:
            raise EdgeloopError(f"no rollout {rollout_id!r}")
        return r

    # -- the state machine ---------------------------------------------------------------------
    def tick(self) -> None:
        """Advance every active rollout, if this replica holds the controller lease."""
        held, fence = self.lease.check()
        if not held:
            return
        with self._lock, fencing.fenced(fence):
            try:
                for r in self.store.rollouts():
                    if r.state in ACTIVE:
                        full = self.store.rollout(r.id)
                        if full is not None:
                            self._advance(full)
            except LeaseLostError as e:
                log.warning("rollout controller: %s; sending nothing until this replica holds it again", e)

    def _advance(self, r: RolloutDetail) -> None:
        self.sender.republish(r)
        if r.state == "rolling_back":
            if self.rollbacks.send_pending(r) == 0 and self.rollbacks.settled(r):
                self._finish(r, "rolled_back", r.reason)
            return
        wave = r.waves[r.current_wave]
        manifest = self.store.release(r.release_name, r.release_version)
        if manifest is None:
            self._finish(r, "aborted", "release manifest missing from the store")
            return
        if wave.state == "pending":
            self._send_wave(r, wave, manifest)
        elif wave.state == "sent":
            unsent = [d for d in r.members(wave.wave) if d.state == "pending"]
            if unsent:  # the host (or the lease holder) stopped in the middle of sending this wave
                self._send_deploys(r, unsent, manifest)
            self._collect(r, r.members(wave.wave), manifest)
            self._maybe_gate(r, wave, (self.store.rollout(r.id) or r).members(wave.wave))

    def _send_wave(self, r: RolloutDetail, wave: WaveRecord, manifest: ReleaseManifest) -> None:
        cfg, t = r.config, now()
        self.store.update_wave(
            r.id, wave.wave, state="sent", started_at=t, deadline=t + timedelta(seconds=cfg.wave_timeout_s)
        )
        self._send_deploys(r, r.members(wave.wave), manifest)

    def _send_deploys(self, r: RolloutDetail, members: list[RolloutDeviceRecord], manifest: ReleaseManifest) -> None:
        cfg = r.config
        for d in members:
            cmd = DeployCommand(
                device_id=d.device_id,
                manifest=manifest,
                base_url=self.base_url,
                rollout_id=r.id,
                precision=cfg.precision,
                bench=cfg.bench,
            )
            self.sender.send(r, d.device_id, cmd, "sent")
        log.info("rollout %s: deploy sent to %s", r.id, ", ".join(d.device_id for d in members))

    def _collect(self, r: RolloutDetail, members: list[RolloutDeviceRecord], manifest: ReleaseManifest) -> None:
        pending = {d.command_id: d for d in members if d.state in AWAITING_REPORTS and d.command_id}
        if not pending:
            return
        deploys = self._answers(r, pending, DeployReport)
        benches = self._answers(r, pending, BenchmarkReport)
        for cid, d in pending.items():
            dep = deploys.get(cid)
            if dep is not None:
                self._judge(r, d, dep, benches.get(cid), manifest)
        unanswered = (d for cid, d in pending.items() if cid not in benches and getattr(deploys.get(cid), "ok", True))
        self.sender.resend_unanswered(r, unanswered)

    def _answers(
        self, r: RolloutDetail, pending: dict[str, RolloutDeviceRecord], model: type[GateReport]
    ) -> dict[str, GateReport]:
        """Each command's report from the device it went to, the first to arrive; any other device's
        report that names the command (a forgery, or a bug) is ignored."""
        out: dict[str, GateReport] = {}
        for x in self.store.reports_for_commands(pending, model):
            d = pending.get(x.command_id or "")
            if d is None or x.command_id in out:
                continue
            if x.answers(r.fleet, d.device_id):
                out[str(x.command_id)] = x.report
            else:
                log.warning(
                    "rollout %s: ignoring a %s report for %s's command from %s/%s",
                    r.id,
                    x.report.kind,
                    d.device_id,
                    x.fleet,
                    x.device_id,
                )
        return out

    def _judge(
        self,
        r: RolloutDetail,
        d: RolloutDeviceRecord,
        dep: DeployReport,
        bench: BenchmarkReport | None,
        manifest: ReleaseManifest,
    ) -> None:
        if not dep.ok:
            self.store.update_rollout_device(r.id, d.device_id, state="failed", error=dep.error)
            return
        prev = dep.previous_release
        if prev and (prev.name, prev.version) != (manifest.name, manifest.version):
            self.store.update_rollout_device(r.id, d.device_id, previous_name=prev.name, previous_version=prev.version)
        if bench is None:
            if d.state != "deployed":
                self.store.update_rollout_device(r.id, d.device_id, state="deployed")
            return
        v = gates.judge(bench, manifest, r.config)
        self.store.update_rollout_device(r.id, d.device_id, state=v.state, top1=v.top1, p99_ms=v.p99_ms, error=v.error)

    def _time_out(self, r: RolloutDetail, d: RolloutDeviceRecord) -> RolloutDeviceRecord:
        why = "no report before the wave timeout" + ("" if d.was_online else " (device was offline)")
        self.store.update_rollout_device(r.id, d.device_id, state="timeout", error=why)
        return dataclasses.replace(d, state="timeout", error=why)

    def _maybe_gate(self, r: RolloutDetail, wave: WaveRecord, members: list[RolloutDeviceRecord]) -> None:
        cfg = r.config
        unresolved = [d for d in members if d.state in AWAITING_REPORTS]
        if unresolved and wave.deadline is not None and now() < wave.deadline:
            return
        members = [self._time_out(r, d) if d.state in AWAITING_REPORTS else d for d in members]
        summary = gates.summarize(members)
        passed = gates.passes(summary, cfg)
        self.store.update_wave(
            r.id, wave.wave, state="passed" if passed else "failed", finished_at=now(), summary=summary
        )
        if not passed:
            reasons = gates.failure_reasons(summary)
            log.warning(
                "rollout %s wave %d failed (%.0f%% > %.0f%%): %s",
                r.id,
                wave.wave,
                100 * summary.failure_fraction,
                100 * cfg.abort_failures,
                reasons,
            )
            why = f"wave {wave.wave} failed its gate: {reasons}"
            if self.store.update_rollout(r.id, state="rolling_back", reason=why, only_if=frozenset({"running"})):
                self.rollbacks.send_pending(self._get(r.id))
            return
        log.info("rollout %s wave %d passed (%d devices)", r.id, wave.wave, len(members))
        if r.current_wave + 1 < len(r.waves):
            self.store.update_rollout(r.id, current_wave=r.current_wave + 1, only_if=frozenset({"running"}))
        else:
            self._finish(r, "completed", "")

    def _finish(self, r: RolloutRecord, state: RolloutState, reason: str) -> None:
        """Unless another replica moved the rollout on since it was read (an abort through its API)."""
        if self.store.update_rollout(r.id, state=state, reason=reason, only_if=frozenset({r.state})):
            log.info("rollout %s %s%s", r.id, state, f": {reason}" if reason else "")
