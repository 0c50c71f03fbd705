"""Commands to devices: stored before they are published, re-published until the broker has them.

A command is written to the store first (payload and message id), then published; if the host dies
before the PUBACK, the resumed host re-sends the same payload with the same message id, and the
agent drops it as a duplicate if the first one did arrive. With several ``serve`` replicas only the holder
of the controller lease sends, and ``store.fencing`` refuses the store-first write of one that lost it.

A PUBACK is not an answer: a broker that restarts can lose a command it acknowledged, or a report on its
way back (Mosquitto 2.0 right after a restart, a broker cluster that loses a node). A command that the
broker took but that the device has not answered is sent again, with backoff (the rollout's
``command_resend_s``, 30 s by default, doubled each time) while it is young enough for the agent's
clock-skew window (``RESEND_UNTIL_S``). The agent runs a command once: a repeat of one it ran is
answered with the reports it made (``device/agent.py``), so the answer that was lost arrives, and one
that was not is dropped by the ingest as a duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from host.fleet.signer import CommandSigner
from host.fleet.store import Store, fencing
from host.fleet.store.records import (
    COMMAND_IN_FLIGHT,
    DeviceRolloutState,
    RolloutDetail,
    RolloutDeviceRecord,
    RolloutRecord,
)
from shared import protocol
from shared.protocol import DeployCommand, RollbackCommand

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], bool]  # topic, payload -> True once the broker acknowledged it
RESEND_UNTIL_S = 300.0  # not once the command is older: half the agent's default clock-skew window (600 s)
_KEEP = 100_000  # commands whose send times are remembered (the oldest are forgotten first)


class CommandSender:
    def __init__(
        self,
        store: Store,
        publish: Publish,
        signer: CommandSigner,
        resend_until_s: float = RESEND_UNTIL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.publish = publish
        self.signer = signer
        self.resend_until_s = resend_until_s
        self.clock = clock
        self.resent = 0
        # command id -> (first handed to the broker, last handed, times sent): this process's memory; a
        # resumed host starts the clock again, which only delays a resend
        self._sends: dict[str, tuple[float, float, int]] = {}

    def send(
        self, r: RolloutRecord, device_id: str, cmd: DeployCommand | RollbackCommand, state: DeviceRolloutState
    ) -> None:
        payload = protocol.encode(self.signer.sign(cmd))
        # stored first: if we die before the PUBACK, the resumed host re-sends this same message id. Under a
        # lease (several replicas) the write is fenced: a replica that lost the lease stores nothing, so it
        # sends nothing; the epoch it was stored under stays with the command.
        fence = fencing.current()
        self.store.update_rollout_device(
            r.id,
            device_id,
            state=state,
            command_id=str(cmd.message_id),
            command=payload.decode(),
            published=False,
            epoch=fence.epoch if fence is not None else None,
        )
        if self.publish(protocol.command_topic(r.fleet, device_id), payload):
            self.store.update_rollout_device(r.id, device_id, published=True)
            self._sent(str(cmd.message_id))

    def _sent(self, command_id: str) -> None:
        t = self.clock()
        first, _, n = self._sends.get(command_id, (t, t, 0))
        self._sends[command_id] = (first, t, n + 1)
        if len(self._sends) > _KEEP:
            for old in list(self._sends)[: _KEEP // 2]:
                del self._sends[old]

    def resend_unanswered(self, r: RolloutRecord, waiting: Iterable[RolloutDeviceRecord]) -> int:
        """Send again what the broker took and the device has not answered (see the module doc); the count."""
        t, n, after = self.clock(), 0, r.config.command_resend_s
        for d in waiting:
            if not (d.command and d.command_id and d.published):
                continue
            first, last, times = self._sends.setdefault(d.command_id, (t, t, 1))
            if t - first > self.resend_until_s or t - last < after * 2 ** (times - 1):
                continue
            if self.publish(protocol.command_topic(r.fleet, d.device_id), d.command.encode()):
                self._sent(d.command_id)
                self.resent += 1
                n += 1
                log.warning(
                    "rollout %s: no answer from %s to command %s in %.0f s; sent it again (same message id)",
                    r.id,
                    d.device_id,
                    d.command_id,
                    t - last,
                )
        return n

    def republish(self, r: RolloutDetail) -> None:
        for d in r.devices:
            if d.command and not d.published and d.state in COMMAND_IN_FLIGHT:
                log.info("re-sending stored command %s to %s", d.command_id, d.device_id)
                if self.publish(protocol.command_topic(r.fleet, d.device_id), d.command.encode()):
                    self.store.update_rollout_device(r.id, d.device_id, published=True)
                    self._sent(str(d.command_id))
