"""Which commands the agent runs at all: the checks before a handler sees one.

In order, each refusal an ``EventReport`` with its code: too large (before any decoding), not a
valid command (any decoding failure, never an exception past this module), addressed to another
device, outside the clock-skew window (``sent_at`` too far from the device's clock: a replay of an
old command, or a forged date), not signed by a trusted host key (rollbacks included), and already
seen (a replay or a redelivery: the id is recorded before the command runs, so this survives a crash).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.config import AgentConfig
from device.outbox import Outbox
from shared import protocol, signing
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

Command = (
    protocol.DeployCommand
    | protocol.BenchmarkCommand
    | protocol.RecalibrateCommand
    | protocol.RollbackCommand
    | protocol.SampleCommand
)


class CommandRefusedError(EdgeloopError):
    """A command that is not run; ``code`` names why, ``ids`` are the command's ids when known."""

    def __init__(self, code: str, message: str, ids: dict[str, Any] | None = None, duplicate: bool = False) -> None:
        super().__init__(message)
        self.code, self.ids, self.duplicate = code, ids or {}, duplicate


class Admission:
    def __init__(self, config: AgentConfig, outbox: Outbox) -> None:
        self.config, self.outbox = config, outbox
        paths = config.command_keys or config.trusted_keys
        self._keys: list[Ed25519PublicKey] = [signing.load_public_key(k) for k in paths]

    def admit(self, payload: bytes, now: datetime | None = None) -> Command:
        """The command in ``payload`` if it may run; raises ``CommandRefusedError`` otherwise."""
        limit = self.config.max_command_kb * 1024
        if len(payload) > limit:
            raise CommandRefusedError(
                "command_too_large", f"a {len(payload):,}-byte command; the limit is {limit:,} bytes"
            )
        try:
            cmd: Command = protocol.decode_command(payload)
        except Exception as e:
            raise CommandRefusedError("malformed_command", f"{str(e)[:500]} (payload starts {payload[:60]!r})") from e
        ids = {"command_id": cmd.message_id, "rollout_id": getattr(cmd, "rollout_id", None)}
        if cmd.device_id != self.config.device_id:
            raise CommandRefusedError(
                "wrong_device", f"command addressed to {cmd.device_id!r}, not {self.config.device_id!r}", ids
            )
        skew = ((now or datetime.now(timezone.utc)) - cmd.sent_at).total_seconds()
        if abs(skew) > self.config.max_clock_skew_s:
            raise CommandRefusedError(
                "command_outside_skew_window",
                f"{cmd.kind} command {cmd.message_id} was sent {skew:+.0f} s from this device's clock "
                f"(the window is +-{self.config.max_clock_skew_s:.0f} s): refused as stale or forged",
                ids,
            )
        if self.config.require_command_signature:
            try:
                signing.verify(cmd, self._keys)
            except signing.SignatureError as e:
                raise CommandRefusedError("command_signature_invalid", str(e), ids) from e
        if not self.outbox.first_time(str(cmd.message_id), keep_s=2 * self.config.max_clock_skew_s + 60):
            raise CommandRefusedError(
                "duplicate_command", f"command {cmd.message_id} was already received", ids, duplicate=True
            )
        return cmd
