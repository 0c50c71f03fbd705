"""Commands to devices: stored before they are published, re-published until the broker has them.

A command is written to the store first (payload and message id), then published; if the host dies
before the PUBACK, the resumed host re-sends the same payload with the same message id, and the
agent drops it as a duplicate if the first one did arrive. With several ``serve`` replicas only the holder
of the controller lease sends, and ``store.fencing`` refuses the store-first write of one that lost it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from host.fleet.signer import CommandSigner
from host.fleet.store import Store, fencing
from host.fleet.store.records import COMMAND_IN_FLIGHT, DeviceRolloutState, RolloutDetail, RolloutRecord
from shared import protocol
from shared.protocol import DeployCommand, RollbackCommand

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], bool]  # topic, payload -> True once the broker acknowledged it


class CommandSender:
    def __init__(self, store: Store, publish: Publish, signer: CommandSigner) -> None:
        self.store = store
        self.publish = publish
        self.signer = signer

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

    def republish(self, r: RolloutDetail) -> None:
        for d in r.devices:
            if d.command and not d.published and d.state in COMMAND_IN_FLIGHT:
                log.info("re-sending stored command %s to %s", d.command_id, d.device_id)
                if self.publish(protocol.command_topic(r.fleet, d.device_id), d.command.encode()):
                    self.store.update_rollout_device(r.id, d.device_id, published=True)
