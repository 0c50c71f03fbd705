"""One lease as this replica sees it: its epoch while held, and until when it is surely still valid."""

from __future__ import annotations

import threading
import time

from host.fleet.store.fencing import Fence


class HeldLease:
    """The controller lease or an ingest slot. ``check`` is what the rollout controller asks before a tick;
    the database has the last word (``store.fencing``), this is the replica's own, conservative view."""

    def __init__(self, name: str, holder: str, seconds: float) -> None:
        self.name, self.holder, self.seconds = name, holder, seconds
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._valid_until = 0.0  # monotonic: when the request that granted or renewed it was made + seconds

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def check(self) -> tuple[bool, Fence | None]:
        """Whether it is held now, and the fence of writes made under it (one snapshot of both)."""
        with self._lock:
            if self._epoch is None:
                return False, None
            return time.monotonic() < self._valid_until, Fence(self.name, self.holder, self._epoch)

    def holds(self) -> bool:
        return self.check()[0]

    def granted(self, epoch: int, asked_at: float) -> None:
        """Taken or renewed by a request made at ``asked_at`` (monotonic): valid for ``seconds`` from then."""
        with self._lock:
            self._epoch, self._valid_until = epoch, asked_at + self.seconds

    def lost(self) -> int | None:
        """Not held any more; the epoch it had."""
        with self._lock:
            epoch, self._epoch, self._valid_until = self._epoch, None, 0.0
        return epoch
