"""Rollback: send every touched device back to the release it ran before, and watch them get there.

A rollback is asked for by marking the rollout ``rolling_back`` (the gate of a failed wave, or an operator
through the API of any replica); the controller's tick then sends each touched device its rollback
(``send_pending``, idempotent: a device that has one is not sent another) and records the answers. A
rollback the broker took and the device never answered is sent again like a deploy
(``CommandSender.resend_unanswered``: same message id, backoff), and answered once by the agent.
"""

from __future__ import annotations

import logging

from host.fleet.rollout.commands import CommandSender
from host.fleet.store import Store, now
from host.fleet.store.records import ROLLBACK_SETTLED, DeviceRolloutState, RolloutDetail
from shared.protocol import DeployReport, RollbackCommand

log = logging.getLogger(__name__)

# a device in one of these states is sent no (further) rollback
_NOTHING_TO_SEND: frozenset[DeviceRolloutState] = ROLLBACK_SETTLED | {"pending", "rollback_failed", "rollback_timeout"}


class Rollbacks:
    def __init__(self, store: Store, sender: CommandSender, base_url: str) -> None:
        self.store = store
        self.sender = sender
        self.base_url = base_url

    def send_pending(self, r: RolloutDetail) -> int:
        """Send a rollback to every touched device of a rolling-back rollout that has none yet; how many."""
        sent = 0
        for d in r.devices:
            if d.state in _NOTHING_TO_SEND:
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
            if (target.name, target.version) == (r.release_name, r.release_version):
                continue
            cmd = RollbackCommand(
                device_id=d.device_id,
                target=target,
                manifest=self.store.release(target.name, target.version),
                base_url=self.base_url,
                rollout_id=r.id,
                reason=r.reason[:1000],
            )
            self.sender.send(r, d.device_id, cmd, "rolling_back")
            sent += 1
        if sent:
            log.warning("rollout %s: rolling back %d device(s): %s", r.id, sent, r.reason)
        return sent

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
            self.sender.resend_unanswered(r, waiting.values())  # a rollback the broker lost, as a deploy
            return False
        for d in waiting.values():
            self.store.update_rollout_device(r.id, d.device_id, state="rollback_timeout")
        return True
