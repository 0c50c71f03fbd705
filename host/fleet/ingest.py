"""Telemetry ingest: MQTT reports and statuses -> the store, in batches, idempotent on message_id.

Reports arrive on ``edgeloop/v1/{fleet}/{device}/report/{kind}``; with an MQTT 5 broker several
workers share the load through ``$share/edgeloop-ingest/...``, and on a 3.1.1-only broker (the
embedded amqtt) one worker uses the plain subscription. Messages are validated on the network
thread (cheap, pydantic) and written by a writer thread in batches, so the broker is drained
at network speed. A payload that fails validation is logged, counted and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from host.fleet.store import Store
from shared import protocol
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, MqttSession

log = logging.getLogger(__name__)

SHARE_GROUP = "edgeloop-ingest"


@dataclass
class IngestStats:
    received: int = 0
    invalid: int = 0
    written: int = 0
    duplicates: int = 0
    statuses: int = 0
    batches: int = 0
    seen_ids: set[str] | None = None  # filled only when tracking (tests and the scale benchmark)
    started: float = field(default_factory=time.monotonic)


class Ingest:
    def __init__(
        self,
        store: Store,
        broker: BrokerSettings,
        worker: int = 0,
        shared: bool = True,
        statuses: bool = True,
        batch: int = 1000,
        flush_s: float = 0.05,
        track_ids: bool = False,
    ) -> None:
        self.store = store
        self.stats = IngestStats(seen_ids=set() if track_ids else None)
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._batch, self._flush_s = batch, flush_s
        subs = [(protocol.report_filter(shared_group=SHARE_GROUP if shared else None), 1)]
        if statuses:
            subs.append((protocol.status_filter(), 1))
        self.session = MqttSession(
            broker, client_id=f"edgeloop-ingest-{worker}", subscriptions=subs, on_message=self._on_message
        )
        self._writer = threading.Thread(target=self._write_loop, name=f"ingest-writer-{worker}", daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._writer.start()
        self.session.start()

    def stop(self) -> None:
        self._stopping = True
        self.session.stop()
        self._queue.put(None)
        self._writer.join(timeout=30)

    # network thread: validate and enqueue only
    def _on_message(self, topic: str, payload: bytes) -> None:
        self.stats.received += 1
        try:
            parts = protocol.parse_topic(topic)
            if parts.channel == "status":
                status = protocol.decode_status(payload)
                if status.device_id != parts.device or status.fleet != parts.fleet:
                    raise protocol.ProtocolError(f"status for {status.fleet}/{status.device_id} on {topic}")
                self._queue.put(("status", status))
                return
            report = protocol.decode_report(payload)
            if report.device_id != parts.device or report.kind != parts.kind:
                raise protocol.ProtocolError(f"{report.kind} report from {report.device_id} on {topic}")
        except EdgeloopError as e:
            self.stats.invalid += 1
            log.warning("dropped an invalid message on %s: %s", topic, str(e)[:300])
            return
        if self.stats.seen_ids is not None:
            self.stats.seen_ids.add(str(report.message_id))
        self._queue.put((parts.fleet, report))

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            deadline = time.monotonic() + self._flush_s
            while len(items) < self._batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._flush(items)
                    return
                items.append(item)
            self._flush(items)

    def _flush(self, items: list[tuple[str, Any]]) -> None:
        reports = [(fleet, r) for fleet, r in items if fleet != "status"]
        try:
            for kind, status in items:
                if kind == "status":
                    self.store.upsert_status(status)
                    self.stats.statuses += 1
            if reports:
                new = self.store.add_reports(reports)
                self.stats.written += new
                self.stats.duplicates += len(reports) - new
            self.stats.batches += 1
        except Exception:  # a store hiccup must not kill ingest; the items are retried once
            log.exception("store write failed for %d items; retrying once", len(items))
            time.sleep(0.5)
            try:
                if reports:
                    self.stats.written += self.store.add_reports(reports)
            except Exception:
                log.exception("dropping %d reports after a second store failure", len(reports))

    def drained(self) -> bool:
        return self._queue.empty()

    def rate(self) -> float:
        return self.stats.written / max(1e-9, time.monotonic() - self.stats.started)


_STAT_FIELDS = ("received", "invalid", "written", "duplicates", "statuses", "batches")


class IngestProcess:
    """One ingest worker in its own process, so that several workers use several cores.

    Ingest is Python-bound (paho's packet handling, pydantic validation, the driver's executemany):
    two workers in one process share one GIL and measured *slower* together (4,900 reports/s) than
    one alone (6,200/s). A child process owns its own MQTT session and store connection; its
    counters come back through shared memory, so ``stats`` reads like an in-process ``Ingest``'s.
    """

    def __init__(self, store_url: str, broker: BrokerSettings, worker: int, shared: bool, statuses: bool) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork of a process that runs threads
        self._counters = ctx.Array("q", len(_STAT_FIELDS), lock=False)
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._started = time.monotonic()
        self.worker = worker
        self._proc = ctx.Process(
            target=_ingest_child,
            args=(store_url, broker, worker, shared, statuses, self._counters, self._stop, self._ready,
                  logging.getLogger().level),
            name=f"edgeloop-ingest-{worker}",
            daemon=True,
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        self._started = time.monotonic()
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
        return self._proc.is_alive()

    @property
    def stats(self) -> IngestStats:
        values = dict(zip(_STAT_FIELDS, list(self._counters), strict=True))
        return IngestStats(**values, started=self._started)


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
    import os

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    parent = os.getppid()
    store = Store(store_url)
    ingest = Ingest(store, broker, worker=worker, shared=shared, statuses=statuses)
    ingest.start()
    ready.set()

    def publish_counters() -> None:
        for i, name in enumerate(_STAT_FIELDS):
            counters[i] = getattr(ingest.stats, name)

    # leave when asked, or when the parent is gone (no orphan keeps consuming the shared subscription)
    while not stop.wait(0.1) and os.getppid() == parent:
        publish_counters()
    ingest.stop()
    publish_counters()
    store.close()
