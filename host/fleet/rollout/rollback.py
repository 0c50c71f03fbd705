"""Rollback: send every touched device back to the release it ran before, and watch them get there."""

from __future__ import annotations

import logging

from host.fleet.rollout.commands import CommandSender
from host.fleet.store import Store, now
from host.fleet.store.records import ROLLBACK_SETTLED, RolloutDetail, RolloutRecord
from shared.protocol import DeployReport, RollbackCommand

log = logging.getLogger(__name__)


class Rollbacks:
    def __init__(self, store: Store, sender: CommandSender, base_url: str) -> None:
        self.store = store
        self.sender = sender
        self.base_url = base_url

    def begin(self, r: RolloutRecord, reason: str) -> None:
        self.store.update_rollout(r.id, state="rolling_back", reason=reason)
        detail = self.store.rollout(r.id)
        if detail is None:
            return
        touched = [d for d in detail.devices if d.state != "pending"]
        for d in touched:
            if d.state in ROLLBACK_SETTLED:
                continue
            target = d.previous
            if target is None:
                self.store.update_rollout_device(
                    r.id,
                    d.device_id,
                    state="no_previous",
                    error="device ran no release before; nothing to roll back to",
                )
                continue
            if (target.name, target.version) == (detail.release_name, detail.release_version):
                continue
            cmd = RollbackCommand(
                device_id=d.device_id,
                target=target,
                manifest=self.store.release(target.name, target.version),
                base_url=self.base_url,
                rollout_id=r.id,
                reason=reason[:1000],
            )
            self.sender.send(detail, d.device_id, cmd, "rolling_back")
        log.warning("rollout %s: rolling back %d device(s): %s", r.id, len(touched), reason)

    def settled(self, r: RolloutDetail) -> bool:
        """Record the rollback reports that came in; True once no device is left waiting (or time ran out)."""
        waiting = {d.command_id: d for d in r.devices if d.state == "rolling_back" and d.command_id}
        if not waiting:
            return True
        for x in self.store.reports_for_commands(waiting, DeployReport):
            d = waiting.get(x.command_id or "")
            if d is not None and x.answers(r.fleet, d.device_id):  # another device cannot settle it
                del waiting[x.command_id or ""]
                ok = x.report.ok
                self.store.update_rollout_device(
                    r.id,
                    d.device_id,
                    state="rolled_back" if ok else "rollback_failed",
                    error=None if ok else x.report.error,
                )
        stale = now() - r.updated_at
        if waiting and stale.total_seconds() < r.config.wave_timeout_s:
            return False
        for d in waiting.values():
            self.store.update_rollout_device(r.id, d.device_id, state="rollback_timeout")
        return True
