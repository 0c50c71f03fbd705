"""One ingest worker: an MQTT session whose messages a writer thread stores in batches, then acks.

Messages are validated on the network thread (cheap, pydantic) and written by the writer thread in
batches, so the broker is drained at network speed. Nothing is acknowledged to the broker before it
is stored: the session acks by hand (``MqttSession(on_delivery=...)``) after the batch's commit, so a
crash loses nothing the broker let go of, and what was not acked is redelivered to the persistent
session and stored once (``message_id`` is idempotent). What a worker was sent and not yet acked is
bounded by MQTT 5's Receive Maximum (``RECEIVE_MAXIMUM``); a batch holds at most half of it, so the
broker fills one half of the window while the other is written.

A batch the database refuses on its data is stored without the rows it refuses (counted as
``rejected``, and logged). When the store is unavailable, the batch waits and is tried again, with
nothing acked meanwhile. A payload that fails validation is logged, counted and acked (dropped).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from host.fleet.ingest.stats import IngestStats
from host.fleet.store import Store
from host.fleet.store.reports import Salvaged, StoreUnavailableError, is_unavailable
from shared import protocol
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, Delivery, MqttSession

log = logging.getLogger(__name__)

SHARE_GROUP = "edgeloop-ingest"
RECEIVE_MAXIMUM = 2000  # unacked messages the broker may have in flight to one worker (MQTT 5)
BATCH = RECEIVE_MAXIMUM // 2
IDLE_S = 0.01  # a batch is written once nothing more arrived for this long (or after flush_s, or full)
RETRY_MAX_S = 10.0
T = TypeVar("T")
Message = protocol.AnyReport | protocol.DeviceStatus


@dataclass(slots=True)
class _Item:
    fleet: str
    message: Message | None  # None: invalid, only to be acked
    delivery: Delivery
    acked: bool = False  # a second PUBACK could ack another message that got the same packet id


class _AbandonedError(Exception):
    """Stopping while the store is unavailable: the batch is left to the broker's redelivery."""


class Ingest:
    def __init__(
        self,
        store: Store,
        broker: BrokerSettings,
        worker: int = 0,
        shared: bool = True,
        statuses: bool = True,
        batch: int = BATCH,
        flush_s: float = 0.05,
        track_ids: bool = False,
        receive_maximum: int = RECEIVE_MAXIMUM,
        drain: bool = False,
    ) -> None:
        """``drain``: resume the persistent session of ``worker``'s slot (a replica that is gone), take what it
        holds and subscribe to nothing (``host.fleet.replica`` ends the session once it is ``quiet``)."""
        self.store = store
        self.worker = worker
        self.stats = IngestStats(seen_ids=set() if track_ids else None, pid=os.getpid())
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._batch, self._flush_s = max(1, min(batch, receive_maximum // 2)), flush_s
        subs = [(protocol.report_filter(shared_group=SHARE_GROUP if shared else None), 1)]
        if statuses or drain:
            subs.append((protocol.status_filter(), 1))
        self._last_delivery = 0.0
        self.session = MqttSession(
            broker,
            client_id=f"edgeloop-ingest-{worker}",
            subscriptions=[] if drain else subs,
            on_delivery=self._on_delivery,
            receive_maximum=receive_maximum,
            on_connected=self._stop_new_deliveries if drain else None,
        )
        self._drain_filters = [f for f, _ in subs] if drain else []
        self._stop = threading.Event()
        self._inhand: list[_Item] = []  # the batch being written: a restarted writer writes it first
        self._writer = self._new_writer()

    def _new_writer(self) -> threading.Thread:
        return threading.Thread(target=self._write_loop, name=f"ingest-writer-{self.worker}", daemon=True)

    def start(self) -> None:
        self._writer.start()
        self.session.start()

    def stop(self, timeout: float = 10.0, end_session: bool = False) -> None:
        """Store and ack what has arrived, then disconnect; what arrives meanwhile is redelivered later
        (``end_session``: the broker forgets the session instead, once it is drained)."""
        self._queue.put(None)
        self._writer.join(timeout=timeout)
        self._stop.set()  # a writer still waiting for an unavailable store gives up (nothing acked)
        self._writer.join(timeout=5)
        self.session.stop(end_session=end_session and self.drained())

    def _stop_new_deliveries(self) -> None:
        """Draining: what the session holds still comes, nothing new is routed to it."""
        for f in self._drain_filters:
            self.session.unsubscribe(f)

    def quiet(self, seconds: float) -> bool:
        """Connected for ``seconds``, nothing delivered for as long, and everything delivered stored and acked."""
        if not self.session.connected.is_set():
            return False
        since = max(self.session.connected_since, self._last_delivery)
        return time.monotonic() - since >= seconds and self.drained()

    def alive(self) -> bool:
        self.stats.alive = self._writer.is_alive()  # health reads it from the stats (the watchdog asks each second)
        return self.stats.alive

    def restart(self) -> None:
        """Start a new writer thread in place of a dead one (the watchdog's job)."""
        if self._writer.is_alive():
            return
        self.stats.restarts += 1
        self._writer = self._new_writer()
        self._writer.start()

    def drained(self) -> bool:
        return self._queue.empty() and not self._inhand

    def rate(self) -> float:
        return self.stats.written / max(1e-9, time.monotonic() - self.stats.started)

    # network thread: validate and enqueue only
    def _on_delivery(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        self.stats.received += 1
        self._last_delivery = time.monotonic()
        try:
            fleet, message = self._decode(topic, payload)
        except EdgeloopError as e:
            self.stats.invalid += 1
            log.warning("dropped an invalid message on %s: %s", topic, str(e)[:300])
            self._queue.put(_Item("", None, delivery))  # acked in its turn, after what came before it
            return
        if self.stats.seen_ids is not None and not isinstance(message, protocol.DeviceStatus):
            self.stats.seen_ids.add(str(message.message_id))
        self._queue.put(_Item(fleet, message, delivery))

    @staticmethod
    def _decode(topic: str, payload: bytes) -> tuple[str, Message]:
        parts = protocol.parse_topic(topic)
        if parts.channel == "status":
            status = protocol.decode_status(payload)
            if status.device_id != parts.device or status.fleet != parts.fleet:
                raise protocol.ProtocolError(f"status for {status.fleet}/{status.device_id} on {topic}")
            return parts.fleet, status
        report = protocol.decode_report(payload)
        if report.device_id != parts.device or report.kind != parts.kind:
            raise protocol.ProtocolError(f"{report.kind} report from {report.device_id} on {topic}")
        return parts.fleet, report

    # writer thread: batches -> the store -> acks
    def _write_loop(self) -> None:
        if self._inhand:  # what a writer that died was holding
            if not self._flush(self._inhand):
                return
            self._inhand = []
        last = False
        while not last:
            items, last = self._collect()
            if items:
                self._inhand = items
                if not self._flush(items):
                    return
            self._inhand = []

    def _collect(self) -> tuple[list[_Item], bool]:
        """The next batch (up to ``batch`` items, what arrived within ``flush_s``, or before a pause of
        ``IDLE_S``); True when stopping."""
        first = self._queue.get()
        if first is None:
            return [], True
        items = [first]
        deadline = time.monotonic() + self._flush_s
        while len(items) < self._batch:
            try:  # a pause means the broker's window is full (it waits for our acks) or the stream is slow
                item = self._queue.get(timeout=max(0.0, min(deadline - time.monotonic(), IDLE_S)))
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        return items, False

    def _flush(self, items: list[_Item]) -> bool:
        """Store a batch, then ack every message in it; False when abandoned (stopping, store down)."""
        reports: list[tuple[str, protocol.AnyReport]] = []
        try:
            for item in items:
                if isinstance(item.message, protocol.DeviceStatus):
                    self._until_stored(partial(self._store_status, item.message))
                elif item.message is not None:
                    reports.append((item.fleet, item.message))
            if reports:
                self._count(self._until_stored(lambda: self.store.add_reports_salvaging(reports)), len(reports))
        except _AbandonedError:
            log.warning("stopping with %d messages not stored; the broker redelivers them", len(items))
            return False
        for item in items:
            if not item.acked:
                self.session.ack(item.delivery)
                item.acked = True
                self.stats.acked += 1
        self.stats.batches += 1
        return True

    def _store_status(self, status: protocol.DeviceStatus) -> None:
        try:
            self.store.upsert_status(status)
        except Exception as e:  # as for reports: a row the store refuses is counted, the store being down is not
            if is_unavailable(e):
                raise StoreUnavailableError(str(e)) from e
            self.stats.rejected += 1
            log.error("the store refused the status of %s/%s: %s", status.fleet, status.device_id, str(e)[:300])
            return
        self.stats.statuses += 1

    def _count(self, salvaged: Salvaged, n: int) -> None:
        self.stats.written += salvaged.new
        self.stats.rejected += len(salvaged.refused)
        self.stats.duplicates += n - salvaged.new - len(salvaged.refused)
        for r in salvaged.refused:
            log.error(
                "the store refused %s report %s from %s/%s (the rest of its batch is stored): %s",
                r.report.kind, r.report.message_id, r.fleet, r.report.device_id, r.error[:300],
            )  # fmt: skip

    def _until_stored(self, write: Callable[[], T]) -> T:
        """``write()``, tried again with backoff while the store is unavailable (nothing is acked meanwhile)."""
        delay = 0.5
        while True:
            try:
                return write()
            except StoreUnavailableError as e:
                self.stats.store_retries += 1
                log.warning("store unavailable; trying again in %.1f s (nothing acked): %s", delay, str(e)[:300])
            if self._stop.wait(delay):
                raise _AbandonedError
            delay = min(2 * delay, RETRY_MAX_S)
