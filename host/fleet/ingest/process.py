"""One ingest worker in its own process, so that several workers use several cores.

Ingest is Python-bound (paho's packet handling, pydantic validation, building each batch's rows): two
workers in one process share one GIL and measured *slower* together (4,900 reports/s) than one
alone (6,200/s). A child process owns its own MQTT session and store connection; its counters come
back through shared memory, so ``stats`` reads like an in-process ``Ingest``'s. A child that dies
is started again by ``restart`` (the host's watchdog): a new process with the same client id, so it
resumes the persistent session and gets what its predecessor had not acked.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import time
from typing import Any

from host.fleet.ingest.stats import COUNTERS, IngestStats
from host.fleet.ingest.worker import Ingest
from host.fleet.store import Store
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings

log = logging.getLogger(__name__)


class IngestProcess:
    def __init__(self, store_url: str, broker: BrokerSettings, worker: int, shared: bool, statuses: bool) -> None:
        self._ctx = mp.get_context("spawn")  # no fork of a process that runs threads
        self._args = (store_url, broker, worker, shared, statuses)
        self.worker = worker
        self._carried = [0] * len(COUNTERS)  # what the worker's earlier processes counted
        self._restarts = 0
        self._started = time.monotonic()
        self._proc, self._counters, self._stop = self._new_process()

    def _new_process(self) -> tuple[Any, Any, Any]:
        counters, stop, ready = self._ctx.Array("q", len(COUNTERS), lock=False), self._ctx.Event(), self._ctx.Event()
        self._ready = ready
        proc = self._ctx.Process(
            target=_ingest_child,
            args=(*self._args, counters, stop, ready, logging.getLogger().level),
            name=f"edgeloop-ingest-{self.worker}",
            daemon=True,
        )
        return proc, counters, stop

    def start(self, timeout: float = 30.0) -> None:
        self._proc.start()
        if not self._ready.wait(timeout):
            raise EdgeloopError(f"ingest worker {self.worker} did not start within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            log.warning("ingest worker %d did not stop; terminating it", self.worker)
            self._proc.terminate()
            self._proc.join(timeout=5)

    def alive(self) -> bool:
        return bool(self._proc.is_alive())

    def restart(self) -> None:
        """Start a new process in place of a dead one (the watchdog's job); its counters carry on."""
        if self._proc.is_alive():
            return
        log.error("ingest worker %d (pid %s) exited with %s; starting it again", self.worker, self._proc.pid,
                  self._proc.exitcode)  # fmt: skip
        self._carried = [a + b for a, b in zip(self._carried, list(self._counters), strict=True)]
        self._restarts += 1
        self._proc.close()
        self._proc, self._counters, self._stop = self._new_process()
        self.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def stats(self) -> IngestStats:
        counts = [a + b for a, b in zip(self._carried, list(self._counters), strict=True)]
        values = dict(zip(COUNTERS, counts, strict=True))
        values["restarts"] += self._restarts
        return IngestStats(**values, alive=self.alive(), pid=self.pid, started=self._started)


def _ingest_child(
    store_url: str,
    broker: BrokerSettings,
    worker: int,
    shared: bool,
    statuses: bool,
    counters: Any,
    stop: Any,
    ready: Any,
    log_level: int,
) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    parent = os.getppid()
    store = Store(store_url)
    ingest = Ingest(store, broker, worker=worker, shared=shared, statuses=statuses)
    # what start-up made (modules, schemas, the engine) lives as long as the process: out of the cyclic
    # collector's sight, the collector's passes scan only what ingest allocates (measured: 12% of a
    # draining worker's CPU went to them, 5% after the freeze)
    gc.freeze()
    ingest.start()
    ready.set()

    def publish_counters() -> None:
        for i, name in enumerate(COUNTERS):
            counters[i] = getattr(ingest.stats, name)

    # leave when asked, or when the parent is gone (no orphan keeps consuming the shared subscription)
    while not stop.wait(0.1) and os.getppid() == parent:
        if not ingest.alive():  # this process's own watchdog: its writer thread died (a bug)
            log.error("the writer thread of ingest worker %d died; restarting it", worker)
            ingest.restart()
        publish_counters()
    ingest.stop()
    publish_counters()
    store.close()
