"""``recalibrate``: not implemented by this agent version yet; answered with an event."""

from __future__ import annotations

from device.commands.base import AgentContext, CommandHandler, register
from shared.protocol import RecalibrateCommand


@register
class RecalibrateHandler(CommandHandler):
    kind = "recalibrate"

    def handle(self, agent: AgentContext, cmd: RecalibrateCommand) -> None:
        agent.event(
            "warning", "not_supported", "recalibrate is not supported by this agent version", command_id=cmd.message_id
        )
