"""The host's ingest watchdog: a dead ingest worker (its process, or the writer thread of the one in
``serve``'s own process) is started again, with backoff, logged and counted in its ``restarts``.

A worker dies only from a bug of ours or from outside (a ``kill``, the OOM killer): nothing it was
sent is lost meanwhile, since what it had not stored it had not acked either, and the broker keeps it
for the worker's persistent session. The backoff (1 s doubling to 30 s, back to 1 s once a worker has
stayed up for a minute) keeps a worker that dies at once from spinning up a process a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

FIRST_DELAY_S, MAX_DELAY_S, STABLE_S = 1.0, 30.0, 60.0


class Restartable(Protocol):
    worker: int

    def alive(self) -> bool: ...

    def restart(self) -> None: ...


@dataclass
class _Backoff:
    delay: float = FIRST_DELAY_S
    not_before: float = 0.0
    restarted_at: float = 0.0


class IngestWatchdog:
    def __init__(self, workers: Sequence[Restartable], interval_s: float = 1.0) -> None:
        self._workers = list(workers)
        self._backoff = [_Backoff() for _ in self._workers]
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[int]:
        """Restart every dead worker whose backoff has passed; the workers restarted."""
        restarted, now = [], time.monotonic()
        for w, b in zip(self._workers, self._backoff, strict=True):
            if w.alive():
                if b.restarted_at and now - b.restarted_at > STABLE_S:
                    b.delay, b.restarted_at = FIRST_DELAY_S, 0.0
                continue
            if now < b.not_before:
                continue
            log.error("ingest worker %d is dead; restarting it", w.worker)
            try:
                w.restart()
            except Exception:  # tried again after the backoff
                log.exception("could not restart ingest worker %d", w.worker)
            b.restarted_at, b.not_before = now, now + b.delay
            b.delay = min(2 * b.delay, MAX_DELAY_S)
            restarted.append(w.worker)
        return restarted

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check()
            except Exception:  # the watchdog itself must not die
                log.exception("ingest watchdog check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
