"""The agent's command handlers: one ``CommandHandler`` per command kind, in a registry.

``HANDLERS`` imports every handler module, so the registry is full once this package is imported.
Adding a command = one module with a ``@register`` class, plus its line in ``HANDLERS``.
"""

from device.commands import deploy, recalibrate, sample
from device.commands.base import AgentContext, CommandHandler, handler_for, kinds, register

HANDLERS = (deploy, recalibrate, sample)

__all__ = ["HANDLERS", "AgentContext", "CommandHandler", "handler_for", "kinds", "register"]
