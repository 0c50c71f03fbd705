"""What a command handler is (``CommandHandler``), what it may use of the agent (``AgentContext``), and
the registry that maps a command ``kind`` to its handler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from device.activation import EngineManager
from device.config import AgentConfig
from device.state import AgentState
from shared.protocol import WireModel

if TYPE_CHECKING:  # the serving glue imports nothing of the commands; this is for the type only
    from device.serving.daemon import AgentServing


class AgentContext(Protocol):
    """The parts of the agent a handler works with (``device.agent.Agent`` provides them)."""

    config: AgentConfig
    device_id: str
    fleet: str
    state: AgentState
    engines: EngineManager
    serving: AgentServing | None

    def report(self, message: WireModel) -> None: ...

    def event(self, level: str, code: str, message: str, **kw: Any) -> None: ...

    def publish_status(self) -> None: ...


class CommandHandler(ABC):
    """Runs one kind of command on the agent's command thread (one command at a time, in order).

    It raises ``ActivationError`` / ``EdgeloopError`` for an outcome the host should hear about; the
    agent turns those into an ``EventReport``, and anything else into an ``internal_error`` event.
    """

    kind: ClassVar[str]

    @abstractmethod
    def handle(self, agent: AgentContext, cmd: Any) -> None: ...


H = TypeVar("H", bound=type[CommandHandler])
_HANDLERS: dict[str, CommandHandler] = {}


def register(cls: H) -> H:
    if cls.kind in _HANDLERS:
        raise ValueError(f"a handler for {cls.kind!r} commands is registered twice")
    _HANDLERS[cls.kind] = cls()
    return cls


def handler_for(kind: str) -> CommandHandler:
    try:
        return _HANDLERS[kind]
    except KeyError:
        raise LookupError(f"no handler for {kind!r} commands (known: {', '.join(sorted(_HANDLERS))})") from None


def kinds() -> list[str]:
    return sorted(_HANDLERS)
