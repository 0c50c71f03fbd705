"""The agent's watchdog: a worker thread that died (a bug of ours) is started again, and said so.

Every loop of the agent catches what a message or a command can throw, so a dead thread means a bug;
the watchdog keeps the device working anyway (commands, reports, serving) and counts each restart,
which the agent reports in its status and as a ``worker_restarted`` event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]


class Watchdog:
    def __init__(self) -> None:
        self._watched: list[_Watched] = []
        self.restarts: Counter[str] = Counter()

    def watch(self, name: str, alive: Callable[[], bool], restart: Callable[[], None]) -> None:
        self._watched.append(_Watched(name, alive, restart))

    @property
    def total(self) -> int:
        return sum(self.restarts.values())

    def check(self) -> list[str]:
        """Restart every dead worker; the names of those restarted."""
        restarted = []
        for w in self._watched:
            if w.alive():
                continue
            log.error("the %s worker died; restarting it", w.name)
            try:
                w.restart()
            except Exception:  # a restart that fails is tried again at the next check
                log.exception("could not restart the %s worker", w.name)
                continue
            self.restarts[w.name] += 1
            restarted.append(w.name)
        return restarted
