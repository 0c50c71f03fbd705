"""Reports: written in batches, idempotent on ``message_id``; read back as the wire models they were.

Report writes are INSERT ... ON CONFLICT DO NOTHING on ``message_id``, so redelivered MQTT messages
and several ingest workers never duplicate a row. Benchmark reports are also flattened into the
``benchmarks`` table, which the charts and the fleet view read, and calibration reports into
``calibrations`` (``store.calibrations``); an event's code gets a column of its own. Telemetry
reports go to their own time series (``store.telemetry``), not to ``reports``: the table holds
every field of the report.

A batch that repeats a ``message_id`` is stored with the first report of that id, in every table
(``reports``, ``benchmarks``, ``calibrations``, ``telemetry`` and its totals): the others are duplicates,
as a redelivery is. Each report's ``sent_at`` is bounded by the host's clock (``bounded_sent_at``), and
what lists several devices' reports (events, series) is ordered by ``received_at``, the host's clock
at ingest, so that no device decides what the others' reports are listed after.

A batch that the database refuses on its data (one row out of range, a NUL byte PostgreSQL will not
store, ...) is split in halves, down to single rows, so that only the rows it refuses are left out
(``add_reports_salvaging``). An error of the connection itself (the store is down, locked, ...)
refuses nothing: it is raised as ``StoreUnavailableError`` and the caller tries the batch again later.

Ingest writes a batch with one statement per table (``store.bulk.insert_rows``); a report's ``payload``
is the JSON the device sent (see ``MAX_RAW_PAYLOAD``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from host.fleet.store.base import MAX_CLOCK_SKEW, StoreBase, aware, bounded_sent_at, now
from host.fleet.store.bulk import BoundRows, bind_rows, insert_rows
from host.fleet.store.calibrations import calibration_row
from host.fleet.store.records import AnyReport, BenchmarkRecord, EventRecord, R, ReceivedReport
from host.fleet.store.schema import benchmarks, calibrations, reports
from host.fleet.store.telemetry import insert_telemetry
from shared.errors import EdgeloopError
from shared.protocol import BenchmarkReport, CalibrationReport, EventReport, TelemetryReport

log = logging.getLogger(__name__)

# errors of the connection, not of the rows: the same rows go in once the store answers again
_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError)


class StoreUnavailableError(EdgeloopError):
    """The store could not be written at all (down, unreachable, locked): nothing was refused."""


def is_unavailable(error: BaseException) -> bool:
    """Whether a write failed because of the connection (try again later), not because of its rows."""
    return isinstance(error, _UNAVAILABLE) or bool(getattr(error, "connection_invalidated", False))


@dataclass
class Refused:
    """A report the database would not store, and why."""

    fleet: str
    report: AnyReport
    error: str


@dataclass
class Salvaged:
    """What ``add_reports_salvaging`` made of a batch: how many reports were new, and the refused ones."""

    new: int = 0
    refused: list[Refused] = field(default_factory=list)


# a payload as the device sent it is stored up to this size; a larger one is encoded again (the wire model
# bounds every field, not the whitespace around them)
MAX_RAW_PAYLOAD = 16 * 1024


def _report_row(fleet: str, r: AnyReport, received: datetime, payload: str | None = None) -> dict[str, Any]:
    """``payload``: the report's JSON as the device sent it (else it is encoded here)."""
    fields = vars(r)  # a field the kind lacks: None (pydantic's getattr of a missing one raises, slowly)
    release, command_id = r.release, fields.get("command_id")
    return {
        "message_id": str(r.message_id),
        "kind": r.kind,
        "fleet": fleet,
        "device_id": r.device_id,
        "rollout_id": fields.get("rollout_id"),
        "command_id": str(command_id) if command_id else None,
        "release_name": release.name if release else None,
        "release_version": release.version[:32] if release else None,  # the wire does not bound versions
        "ok": fields.get("ok"),
        "sent_at": r.sent_at,
        "received_at": received,
        "payload": payload if payload is not None else r.model_dump_json(),
        "code": r.code if isinstance(r, EventReport) else None,
    }


def _benchmark_row(fleet: str, r: BenchmarkReport) -> dict[str, Any]:
    return {
        "message_id": str(r.message_id),
        "fleet": fleet,
        "device_id": r.device_id,
        "rollout_id": r.rollout_id,
        "release_name": r.release.name if r.release else None,
        "release_version": r.release.version[:32] if r.release else None,
        "runtime": r.runtime,
        "precision": r.precision,
        "accelerator": r.accelerator,
        "p50_ms": r.latency_ms.p50,
        "p90_ms": r.latency_ms.p90,
        "p99_ms": r.latency_ms.p99,
        "top1": r.top1,
        "n_images": r.n_images,
        "throughput_ips": r.raw_throughput_ips,
        "e2e_throughput_ips": r.end_to_end_throughput_ips,
        "sent_at": r.sent_at,
    }


def _benchmark(row: Any) -> BenchmarkRecord:
    m = dict(row._mapping)
    m["sent_at"], m["received_at"] = aware(m["sent_at"]), aware(m["received_at"])
    return BenchmarkRecord(**m)


def _as_stored(
    items: Sequence[tuple[str, AnyReport]], payloads: Sequence[str | bytes | None] | None, received: datetime
) -> list[tuple[str, AnyReport, str | None]]:
    """A batch as the store keeps it: the first report of each message id (a later one is a duplicate in
    every table, never a second version in some), each ``sent_at`` bounded by the host's clock; with the
    JSON the device sent for it, when that is what gets stored (``None``: encode the report)."""
    seen: set[uuid.UUID] = set()
    out: list[tuple[str, AnyReport, str | None]] = []
    latest = received + MAX_CLOCK_SKEW
    for i, (fleet, r) in enumerate(items):
        if r.message_id in seen:
            continue
        seen.add(r.message_id)
        if r.sent_at <= latest:
            out.append((fleet, r, _text(payloads[i]) if payloads is not None else None))
        else:  # moved back, in the columns and in the payload alike
            out.append((fleet, bounded_sent_at(r, received), None))
    return out


def _text(raw: str | bytes | None) -> str | None:
    """A received payload as the text to store, or None when it is to be encoded again."""
    if raw is None or len(raw) > MAX_RAW_PAYLOAD:
        return None
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()  # valid UTF-8 once the report validated from it; checked anyway
    except UnicodeDecodeError:
        return None


def _kind(model: type[AnyReport]) -> str:
    return str(model.model_fields["kind"].default)


class ReportQueries(StoreBase):
    def add_reports(
        self, items: Sequence[tuple[str, AnyReport]], payloads: Sequence[str | bytes | None] | None = None
    ) -> int:
        """Insert (fleet, report) pairs in one transaction; duplicates by message_id are skipped.
        ``payloads`` (ingest): the JSON each report was validated from, in the same order, stored as its
        ``payload`` instead of encoding the report again.

        Returns how many were new.
        """
        if not items:
            return 0
        if payloads is not None and len(payloads) != len(items):
            raise ValueError(f"{len(payloads)} payloads for {len(items)} reports")
        received = now()
        stored = _as_stored(items, payloads, received)
        served = [(fleet, r) for fleet, r, _ in stored if isinstance(r, TelemetryReport)]
        logged = self._logged_rows([x for x in stored if not isinstance(x[1], TelemetryReport)], received)
        with self._lock, self._one_writer(), self.engine.begin() as conn:
            new = self._insert_logged(conn, *logged)
            if served:
                new += insert_telemetry(conn, self._insert, served, received)
        return new

    @contextlib.contextmanager
    def _one_writer(self) -> Iterator[None]:
        """SQLite: the batches of every process's ingest take turns on a file lock beside the database, so
        the next writer starts the moment the one before commits. SQLite's own wait for its write lock
        sleeps and polls (1, 2, 5, 10, 15, 20, 25 ms ...): measured, a waiting writer got the database a
        median 6 ms (up to 57 ms) after the other's commit, and within 0.1 ms with the file lock. Other
        stores: nothing to do."""
        path, fd = self._writer_lock, -1
        if path is not None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:  # a read-only directory, ...: SQLite's own lock keeps one writer at a time
                log.warning("no ingest writer lock %s (%s): SQLite's busy wait takes turns instead", path, e)
        if fd < 0:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits without the GIL
            yield
        finally:
            os.close(fd)  # and the lock with it

    @functools.cached_property
    def _writer_lock(self) -> str | None:
        path = self.engine.url.database if self.dialect == "sqlite" else None
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return f"{path}-ingest.lock"

    def add_reports_salvaging(
        self, items: Sequence[tuple[str, AnyReport]], payloads: Sequence[str | bytes | None] | None = None
    ) -> Salvaged:
        """``add_reports``, but a batch the database refuses on its data is split in halves, down to
        single rows: every report it accepts is stored and only the rows it refuses are left out.

        Raises ``StoreUnavailableError`` (with the halves stored so far kept: writes are idempotent) when
        the connection fails, so that a store that is down refuses nothing.
        """
        try:
            return Salvaged(new=self.add_reports(items, payloads))
        except Exception as e:  # any error of a row (a DBAPI error, an int sqlite3 cannot bind, ...)
            if is_unavailable(e):
                raise StoreUnavailableError(f"the store {self.dialect} is unavailable: {e}") from e
            if len(items) == 1:
                fleet, report = items[0]
                return Salvaged(refused=[Refused(fleet, report, f"{type(e).__name__}: {e}")])
        half = len(items) // 2
        first = self.add_reports_salvaging(items[:half], None if payloads is None else payloads[:half])
        second = self.add_reports_salvaging(items[half:], None if payloads is None else payloads[half:])
        return Salvaged(first.new + second.new, first.refused + second.refused)

    def _logged_rows(
        self, items: Sequence[tuple[str, AnyReport, str | None]], received: datetime
    ) -> tuple[BoundRows, BoundRows, BoundRows]:
        """The rows of ``reports``, ``benchmarks`` and ``calibrations`` for a batch, bound before its
        transaction begins."""
        dialect = self.engine.dialect
        rows = [_report_row(fleet, r, received, payload) for fleet, r, payload in items]
        bench_rows = [
            {**_benchmark_row(fleet, r), "received_at": received}
            for fleet, r, _ in items
            if isinstance(r, BenchmarkReport)
        ]
        calib_rows = [calibration_row(fleet, r, received) for fleet, r, _ in items if isinstance(r, CalibrationReport)]
        return (
            bind_rows(dialect, reports, rows),
            bind_rows(dialect, benchmarks, bench_rows),
            bind_rows(dialect, calibrations, calib_rows),
        )

    def _insert_logged(self, conn: Connection, rows: BoundRows, benches: BoundRows, calibs: BoundRows) -> int:
        new = set(insert_rows(conn, reports, rows, returning=True))
        for table, flat in ((benchmarks, benches), (calibrations, calibs)):
            insert_rows(conn, table, flat.only(new))  # _as_stored left one report per id
        return len(new)

    def count_reports(self, kind: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(reports)
        if kind:
            q = q.where(reports.c.kind == kind)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def _received(self, model: type[R], *where: Any) -> list[ReceivedReport[R]]:
        q = (
            sa.select(
                reports.c.fleet, reports.c.device_id, reports.c.command_id, reports.c.received_at, reports.c.payload
            )
            .where(reports.c.kind == _kind(model), *where)
            .order_by(reports.c.received_at)  # the host's clock orders reports, never the device's sent_at
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [ReceivedReport(r[1], r[2], aware(r[3]), model.model_validate_json(r[4]), r[0]) for r in rows]

    def rollout_reports(self, rollout_id: str, model: type[R]) -> list[ReceivedReport[R]]:
        """Every report of one kind (``DeployReport``, ``BenchmarkReport``, ...) of a rollout, oldest first."""
        return self._received(model, reports.c.rollout_id == rollout_id)

    def reports_for_commands(self, command_ids: Iterable[str], model: type[R]) -> list[ReceivedReport[R]]:
        """The reports of one kind that answer these commands, in the order they arrived (callers keep
        only the report of the device each command went to: see ``ReceivedReport.answers``)."""
        ids = list(command_ids)
        return self._received(model, reports.c.command_id.in_(ids)) if ids else []

    def latest_benchmarks(self, fleet: str | None = None) -> dict[tuple[str, str], BenchmarkRecord]:
        """Each device's latest benchmark, by the device's own (bounded) ``sent_at``: it orders only its own."""
        latest = sa.select(benchmarks.c.fleet, benchmarks.c.device_id, sa.func.max(benchmarks.c.sent_at).label("t"))
        if fleet:
            latest = latest.where(benchmarks.c.fleet == fleet)
        sub = latest.group_by(benchmarks.c.fleet, benchmarks.c.device_id).subquery()
        q = sa.select(benchmarks).join(
            sub,
            sa.and_(
                benchmarks.c.fleet == sub.c.fleet,
                benchmarks.c.device_id == sub.c.device_id,
                benchmarks.c.sent_at == sub.c.t,
            ),
        )
        with self.engine.connect() as conn:
            return {(r.fleet, r.device_id): _benchmark(r) for r in conn.execute(q)}

    def benchmark_series(self, fleet: str | None = None, limit: int = 5000) -> list[BenchmarkRecord]:
        """The latest ``limit`` benchmarks received (of a fleet), oldest first."""
        b = benchmarks.c
        q = sa.select(benchmarks).order_by(b.received_at.desc(), b.sent_at.desc()).limit(limit)
        if fleet:
            q = q.where(benchmarks.c.fleet == fleet)
        with self.engine.connect() as conn:
            rows = [_benchmark(r) for r in conn.execute(q)]
        return rows[::-1]

    def events(self, limit: int = 100) -> list[EventRecord]:
        """The latest ``limit`` events received, newest first."""
        q = (
            sa.select(reports.c.fleet, reports.c.payload)
            .where(reports.c.kind == "event")
            .order_by(reports.c.received_at.desc(), reports.c.sent_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [EventRecord(r[0], EventReport.model_validate_json(r[1])) for r in conn.execute(q)]

    def command_events(self, command_id: str) -> list[EventRecord]:
        """The events that name one command, in the order they arrived (callers keep those of the device
        the command went to)."""
        q = (
            sa.select(reports.c.fleet, reports.c.payload)
            .where(reports.c.kind == "event", reports.c.command_id == command_id)
            .order_by(reports.c.received_at, reports.c.sent_at)
        )
        with self.engine.connect() as conn:
            return [EventRecord(r[0], EventReport.model_validate_json(r[1])) for r in conn.execute(q)]
