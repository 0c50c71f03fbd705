"""Durable outbox: every report is written to SQLite before it is published, and deleted only
when the broker's PUBACK for it arrives. Reports made while the broker is unreachable are sent,
in order, after reconnect; a process restart resends whatever was not acknowledged.

Delivery is at-least-once; receivers deduplicate on ``message_id`` (the host's ingest does).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_commands (
    message_id TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    message_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_command ON answers (command_id);
"""


@dataclass(frozen=True)
class Entry:
    id: int
    topic: str
    payload: bytes
    qos: int
    message_id: str


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.added = threading.Event()

    def put(self, topic: str, payload: bytes, message_id: str, qos: int = 1, answers: str | None = None) -> int:
        """Queue a report; ``answers``: the id of the command it answers, kept to answer a repeat of it."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, message_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (topic, payload, qos, message_id, now),
            )
            if answers is not None:
                self._db.execute(
                    "INSERT INTO answers (command_id, topic, payload, message_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (answers, topic, payload, message_id, now),
                )
        self.added.set()
        return int(cur.lastrowid or 0)

    def answer_again(self, command_id: str) -> int:
        """Queue again the reports that answered ``command_id`` (same message ids: a receiver that has them
        drops the copies); the count, 0 when none were made (the command is still running, or it ran
        before this agent kept answers)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, payload, message_id FROM answers WHERE command_id = ? ORDER BY id", (command_id,)
            ).fetchall()
            now = time.time()
            for topic, payload, message_id in rows:
                self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, message_id, created_at) VALUES (?, ?, 1, ?, ?)",
                    (topic, payload, message_id, now),
                )
        if rows:
            self.added.set()
        return len(rows)

    def pending(self, after_id: int = 0, limit: int = 100) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, message_id FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Entry(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), str(r[4])) for r in rows]

    def ack(self, entry_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # Commands are delivered at least once too (QoS 1, persistent session): remember which ran.
    def first_time(self, message_id: str, keep_s: float = 3600.0) -> bool:
        """Record a command id before the command runs; False if it was seen before.

        The record is committed first (autocommit), so a crash in the middle of the command cannot
        let a replay of it run again. Ids older than ``keep_s`` are forgotten: the agent's clock-skew
        window (at most half of ``keep_s``) refuses any command that old before it gets here.
        """
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen_commands (message_id, seen_at) VALUES (?, ?)", (message_id, now)
            )
            if cur.rowcount and cur.rowcount > 0:
                self._db.execute("DELETE FROM seen_commands WHERE seen_at < ?", (now - keep_s,))
                self._db.execute("DELETE FROM answers WHERE created_at < ?", (now - keep_s,))
                return True
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OutboxPump:
    """Moves outbox entries to the broker while connected, keeping at most ``window`` unacked.

    Acknowledgement is read from paho's ``MQTTMessageInfo.is_published()`` in the pump's own
    thread: no lock is ever held across a paho call, so paho's network thread (which runs the
    PUBACK callback under its own locks) can never deadlock against the pump. paho keeps handed
    messages across reconnects and resends them itself; an entry without a PUBACK after
    ``resend_after_s`` is handed over again; at start-up everything left in the outbox is resent.

    A PUBACK that says no subscription matched (MQTT 5) does not count: the broker dropped the report
    (nobody subscribed yet, or Mosquitto 2.0 just after a restart, until the host's ingest, whose
    shared subscription it restored, reconnects). The entry stays and is handed over again after
    ``unrouted_retry_s``.
    """

    def __init__(
        self,
        outbox: Outbox,
        session: object,
        window: int = 50,
        resend_after_s: float = 15.0,
        unrouted_retry_s: float = 2.0,
    ) -> None:
        from shared.mqtt import MqttSession

        if not isinstance(session, MqttSession):
            raise TypeError("session must be an MqttSession")
        self.outbox = outbox
        self.session = session
        self.window = window
        self.resend_after_s = resend_after_s
        self.unrouted_retry_s = unrouted_retry_s
        self.resent = 0
        self.unrouted = 0  # PUBACKs that said nobody subscribed: handed over again later
        # outbox id -> (message info, handed at, entry); info None: unrouted, to be handed again
        self._inflight: dict[int, tuple[Any, float, Entry]] = {}
        self._handed_up_to = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() or self._stop.is_set()

    def restart(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.outbox.added.set()
        self._thread.join(timeout=5)

    def on_published(self, mid: int) -> None:
        """paho's on_publish: just wake the pump, which checks what was acknowledged."""
        self.outbox.added.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.outbox.added.wait(timeout=0.2)
            self.outbox.added.clear()
            try:
                self._reap()
                if self.session.connected.is_set():
                    self._resend_stale()
                    self._pump()
            except Exception:  # keep the pump alive whatever happens
                log.exception("outbox pump error")
                time.sleep(1.0)

    def _reap(self) -> None:
        """Remove entries whose PUBACK arrived (only now are they deleted)."""
        for eid, (info, _, entry) in list(self._inflight.items()):
            if info is None or not info.is_published():
                continue
            if self.session.unrouted(info.mid):
                first = not any(i is None for i, _, _ in self._inflight.values())  # warn once per episode
                self._inflight[eid] = (None, time.monotonic(), entry)
                self.unrouted += 1
                log.log(logging.WARNING if first else logging.DEBUG,
                        "the broker had no subscriber for report %s; kept, sent again in %.0f s",
                        entry.message_id, self.unrouted_retry_s)  # fmt: skip
                continue
            del self._inflight[eid]
            self.outbox.ack(eid)

    def _hand(self, entry: Entry) -> None:
        info = self.session.publish(entry.topic, entry.payload, qos=entry.qos)
        self._inflight[entry.id] = (info, time.monotonic(), entry)
        log.debug("handed report %s (mid %d) to the broker", entry.message_id, info.mid)

    def _resend_stale(self) -> None:
        """A PUBACK that never comes (a broker that lost the message, a half-dead connection):
        hand the entry over again. Receivers drop the duplicate by message_id."""
        t = time.monotonic()
        for _, (info, handed, entry) in list(self._inflight.items()):
            if info is None and handed < t - self.unrouted_retry_s:
                self._hand(entry)
            elif info is not None and handed < t - self.resend_after_s:
                self._hand(entry)
                self.resent += 1
                log.warning("no PUBACK for report %s after %.0fs; sent it again", entry.message_id, self.resend_after_s)

    def _pump(self) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        for e in self.outbox.pending(after_id=self._handed_up_to, limit=room):
            self._hand(e)
            self._handed_up_to = e.id
