"""One ingest worker: an MQTT session whose messages a writer thread stores in batches, then acks.

The network thread (paho's) only appends each message to an inbox (a deque: no lock, no queue); the
writer thread takes a batch at a time, validates it (pydantic, per message: one validation of a whole
batch measured no faster) and writes it, its reports with the JSON they came as (the store keeps that
instead of encoding each report again), so the broker is drained at network speed and the Python of
each report runs once, on the writer's side. Nothing is acknowledged to the broker before it
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
import threading
import time
from collections import deque
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
TOPIC_CACHE = 65_536  # parsed topics kept (a fleet's devices x report kinds); the cache starts over when full
T = TypeVar("T")
Message = protocol.AnyReport | protocol.DeviceStatus


@dataclass(slots=True)
class _Item:
    topic: str
    payload: bytes
    delivery: Delivery
    fleet: str = ""
    message: Message | None = None  # None: invalid (once decoded), only to be acked
    decoded: bool = False  # validated (and counted) once, also when a restarted writer writes it again
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
        # (topic, payload, delivery) as they arrived: deque.append and popleft need no lock of ours
        self._inbox: deque[tuple[str, bytes, Delivery]] = deque()
        self._arrived = threading.Event()  # set when the inbox stops being empty, or to stop
        self._closing = False
        self._topics: dict[str, protocol.Topic] = {}
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
        self._closing = True
        self._arrived.set()
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
        return not self._inbox and not self._inhand

    def rate(self) -> float:
        return self.stats.written / max(1e-9, time.monotonic() - self.stats.started)

    # network thread: into the inbox, nothing more
    def _on_delivery(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        self.stats.received += 1
        inbox = self._inbox
        inbox.append((topic, payload, delivery))
        if len(inbox) == 1:  # the writer may be waiting for it
            self._arrived.set()

    # writer thread: batches -> validated -> the store -> acks
    def _write_loop(self) -> None:
        if self._inhand and not self._write(self._inhand):  # what a writer that died was holding
            return
        while not self._wait():
            if not self._write(self._take(self._batch)):
                return
        left = len(self._inbox)  # stopping: what arrived before is written, what comes later is redelivered
        while left > 0:
            items = self._take(min(left, self._batch))
            left -= len(items)
            if not self._write(items):
                return

    def _write(self, items: list[_Item]) -> bool:
        self._inhand = items
        if not self._flush(items):
            return False
        self._inhand = []
        return True

    def _wait(self) -> bool:
        """Until a batch is ready: ``batch`` messages, or what arrived before a pause of ``IDLE_S`` (the
        broker's window is full, waiting for our acks, or the stream is slow), or within ``flush_s`` of
        the first; True when stopping instead."""
        inbox, arrived = self._inbox, self._arrived
        while not inbox:
            if self._closing:
                return True
            arrived.clear()
            if not inbox and not self._closing:
                arrived.wait(1.0)
        self._last_delivery = time.monotonic()
        deadline, n = self._last_delivery + self._flush_s, len(inbox)
        while n < self._batch and not self._closing:
            pause = min(IDLE_S, deadline - time.monotonic())
            if pause <= 0:
                break
            time.sleep(pause)
            if len(inbox) == n:
                break
            n = len(inbox)
        self._last_delivery = time.monotonic()
        return self._closing

    def _take(self, n: int) -> list[_Item]:
        inbox = self._inbox
        return [_Item(*inbox.popleft()) for _ in range(min(len(inbox), n))]

    def _decode_all(self, items: list[_Item]) -> None:
        """Validate each message of a batch (once: a restarted writer's batch is decoded already); an
        invalid one is logged and counted, and acked with the rest."""
        seen = self.stats.seen_ids
        for item in items:
            if item.decoded:
                continue
            item.decoded = True
            try:
                item.fleet, item.message = self._decode(item.topic, item.payload)
            except EdgeloopError as e:
                self.stats.invalid += 1
                log.warning("dropped an invalid message on %s: %s", item.topic, str(e)[:300])
                continue
            except Exception:  # a bug of ours on one message: it is dropped, not its batch
                self.stats.invalid += 1
                log.exception("dropped a message on %s that could not be decoded", item.topic)
                continue
            if seen is not None and not isinstance(item.message, protocol.DeviceStatus):
                seen.add(str(item.message.message_id))

    def _decode(self, topic: str, payload: bytes) -> tuple[str, Message]:
        parts = self._topics.get(topic)
        if parts is None:
            parts = protocol.parse_topic(topic)
            if len(self._topics) >= TOPIC_CACHE:
                self._topics.clear()
            self._topics[topic] = parts
        if parts.channel == "status":
            status = protocol.decode_status(payload)
            if status.device_id != parts.device or status.fleet != parts.fleet:
                raise protocol.ProtocolError(f"status for {status.fleet}/{status.device_id} on {topic}")
            return parts.fleet, status
        report = protocol.decode_report(payload)
        if report.device_id != parts.device or report.kind != parts.kind:
            raise protocol.ProtocolError(f"{report.kind} report from {report.device_id} on {topic}")
        return parts.fleet, report

    def _flush(self, items: list[_Item]) -> bool:
        """Validate and store a batch, then ack every message in it; False when abandoned (stopping, store
        down)."""
        self._decode_all(items)
        reports: list[tuple[str, protocol.AnyReport]] = []
        payloads: list[bytes] = []  # what each report was validated from: the store keeps it as it came
        try:
            for item in items:
                if isinstance(item.message, protocol.DeviceStatus):
                    self._until_stored(partial(self._store_status, item.message))
                elif item.message is not None:
                    reports.append((item.fleet, item.message))
                    payloads.append(item.payload)
            if reports:
                salvaged = self._until_stored(lambda: self.store.add_reports_salvaging(reports, payloads))
                self._count(salvaged, len(reports))
        except _AbandonedError:
            log.warning("stopping with %d messages not stored; the broker redelivers them", len(items))
            return False
        ack, acked = self.session.ack, 0
        for item in items:
            if not item.acked:
                ack(item.delivery)
                item.acked = True
                acked += 1
        self.stats.acked += acked
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
