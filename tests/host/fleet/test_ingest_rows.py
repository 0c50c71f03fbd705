"""Ingest's write path (SQLite and, with EDGELOOP_TEST_POSTGRES_URL, PostgreSQL): ``insert_rows`` stores what
SQLAlchemy's own INSERT stores, a report's payload is the JSON the device sent (unless the store changed the
report), and a connection lost in the middle of a batch is an unavailable store, never a refused row."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from host.fleet.store import Store
from host.fleet.store import bulk as store_bulk
from host.fleet.store import reports as store_reports
from host.fleet.store.base import MAX_CLOCK_SKEW, now
from host.fleet.store.bulk import insert_rows, sqlite_datetime
from host.fleet.store.calibrations import calibration_row
from host.fleet.store.reports import StoreUnavailableError
from host.fleet.store.schema import benchmarks, calibrations, reports, telemetry
from host.fleet.store.telemetry import telemetry_row
from shared import protocol as p
from tests.host.fleet.factories import calibration_report, telemetry_report
from tests.host.fleet.stores import BACKENDS, open_store
from tests.shared.factories import benchmark_report


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as s:
        yield s


def _rows(table: sa.Table) -> list[dict[str, Any]]:
    """Rows of every kind of column (None, JSON, booleans, datetimes with and without microseconds)."""
    received = now().replace(microsecond=0)
    if table is telemetry:
        served = [telemetry_report("d1"), telemetry_report("d2", latency_ms=None, drift=None, errors={})]
        return [telemetry_row("lab", r, received) for r in served]
    if table is calibrations:
        calibrated = [calibration_report("d1"), calibration_report("d2", better=None, top1_after=None)]
        return [calibration_row("lab", r, received) for r in calibrated]
    if table is benchmarks:
        measured = [benchmark_report("d1", top1=0.5), benchmark_report("d2", top1=None)]
        return [{**store_reports._benchmark_row("lab", r), "received_at": received} for r in measured]
    logged: list[p.AnyReport] = [
        benchmark_report("d1"),
        p.EventReport(device_id="d2", level="info", code="x", message=""),
    ]
    return [store_reports._report_row("lab", r, received) for r in logged]


def _read(store: Store, table: sa.Table) -> dict[str, dict[str, Any]]:
    with store.engine.connect() as conn:
        return {r.message_id: dict(r._mapping) for r in conn.execute(sa.select(table))}


@pytest.mark.parametrize("table", [reports, benchmarks, calibrations, telemetry], ids=lambda t: t.name)
def test_insert_rows_stores_what_sqlalchemy_stores(store: Store, table: sa.Table) -> None:
    rows = _rows(table)
    with store.engine.begin() as conn:
        conn.execute(store._insert(table).on_conflict_do_nothing(index_elements=["message_id"]), rows)
    expected = _read(store, table)
    with store.engine.begin() as conn:
        conn.execute(table.delete())
    with store.engine.begin() as conn:
        assert sorted(insert_rows(conn, table, rows, returning=True)) == sorted(r["message_id"] for r in rows)
        assert insert_rows(conn, table, rows, returning=True) == []  # the same ids again: nothing new
    assert _read(store, table) == expected


def test_sqlite_statements_are_split_at_the_parameter_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    monkeypatch.setattr(store_bulk, "MAX_PARAMS", 13 * 4)  # 4 rows of reports per INSERT
    batch: list[tuple[str, p.AnyReport]] = [("lab", benchmark_report(f"d{i}")) for i in range(10)]
    assert store.add_reports(batch) == 10 and store.count_reports() == 10
    assert store.add_reports(batch) == 0
    store.close()


def test_sqlite_datetime_is_the_text_sqlalchemy_stores() -> None:
    dialect = sqlite.dialect()
    process = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    plus2 = dt.timezone(dt.timedelta(hours=2))
    for value in (
        dt.datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),  # no microseconds: still written out
        dt.datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=plus2),  # its own fields, as SQLAlchemy writes them
        dt.datetime(2000, 1, 1),
        None,
    ):
        assert sqlite_datetime(value) == process(value)


def _payload(store: Store, message_id: uuid.UUID) -> str:
    with store.engine.connect() as conn:
        q = sa.select(reports.c.payload).where(reports.c.message_id == str(message_id))
        return str(conn.execute(q).scalar_one())


def test_the_payload_stored_is_the_json_the_device_sent(store: Store) -> None:
    sent = benchmark_report("d1")
    raw = b'{  "kind": "benchmark",\n' + p.encode(sent)[1:]  # as a device may lay it out
    assert p.decode_report(raw) == sent
    later = benchmark_report("d1", message_id=sent.message_id, top1=0.1)  # the same id again: a duplicate
    assert store.add_reports([("lab", sent), ("lab", later)], [raw, p.encode(later)]) == 1
    assert _payload(store, sent.message_id) == raw.decode()  # the first of the batch, as it came
    assert p.BenchmarkReport.model_validate_json(_payload(store, sent.message_id)) == sent  # read back as it was


def test_a_payload_the_store_changed_or_an_oversized_one_is_encoded_again(store: Store) -> None:
    future = benchmark_report("d1", sent_at=now() + MAX_CLOCK_SKEW + dt.timedelta(hours=1))
    padded = benchmark_report("d1")
    raw_padded = p.encode(padded) + b" " * store_reports.MAX_RAW_PAYLOAD
    assert store.add_reports([("lab", future), ("lab", padded)], [p.encode(future), raw_padded]) == 2
    stored_future = p.decode_report(_payload(store, future.message_id))
    assert stored_future.sent_at < future.sent_at  # bounded, in the payload as in the columns
    assert _payload(store, padded.message_id) == padded.model_dump_json()
    with pytest.raises(ValueError, match="payloads"):
        store.add_reports([("lab", benchmark_report("d1"))], [])


def test_salvaging_keeps_each_payload_with_its_report(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    row, bad = store_reports._report_row, benchmark_report("d2")

    def refused_row(fleet: str, r: p.AnyReport, received: Any, payload: str | None = None) -> dict[str, Any]:
        out = row(fleet, r, received, payload)
        return out | {"payload": None} if r.message_id == bad.message_id else out

    monkeypatch.setattr(store_reports, "_report_row", refused_row)
    good = [benchmark_report(f"d{i}") for i in range(7)]
    items: list[tuple[str, p.AnyReport]] = [("lab", r) for r in [*good[:3], bad, *good[3:]]]
    raws = [p.encode(r) + b"\n" for _, r in items]  # told apart from an encoding by the newline
    salvaged = store.add_reports_salvaging(items, raws)
    assert salvaged.new == 7 and [x.report.message_id for x in salvaged.refused] == [bad.message_id]
    for r in good:
        assert _payload(store, r.message_id) == (p.encode(r) + b"\n").decode()


def test_a_connection_lost_in_the_middle_of_a_batch_is_an_unavailable_store(store: Store) -> None:
    """The batch is tried again later, not split and refused row by row (which would ack and drop it)."""
    if store.dialect != "postgresql":
        pytest.skip("a connection of its own to lose: PostgreSQL")
    admin = sa.create_engine(store.engine.url, isolation_level="AUTOCOMMIT")

    def cut(conn: sa.Connection) -> None:
        pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with admin.connect() as a:
            a.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    sa.event.listen(store.engine, "begin", cut)
    try:
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            store.add_reports_salvaging([("lab", benchmark_report(f"d{i}")) for i in range(5)])
    finally:
        sa.event.remove(store.engine, "begin", cut)
        admin.dispose()
    assert store.add_reports_salvaging([("lab", benchmark_report("d1"))]).new == 1  # a new connection


def test_driver_errors_of_the_bulk_path_are_told_apart_as_sqlalchemys_are(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's COPY goes to the driver's own cursor: its errors are raised as SQLAlchemy's, so that a
    lost connection is an unavailable store and a value the database refuses is a refused row."""
    if store.dialect != "postgresql":
        pytest.skip("the COPY path is PostgreSQL's")
    import psycopg

    raised: list[Exception] = []

    def copy(self: object, statement: object, *args: object, **kw: object) -> None:
        raise raised[-1]

    monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    batch: list[tuple[str, p.AnyReport]] = [("lab", benchmark_report(f"d{i}")) for i in range(3)]
    raised.append(psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"))
    with pytest.raises(StoreUnavailableError):
        store.add_reports_salvaging(batch)
    raised.append(psycopg.DataError("value out of range"))
    salvaged = store.add_reports_salvaging(batch)
    assert salvaged.new == 0 and len(salvaged.refused) == 3 and "DataError" in salvaged.refused[0].error


def test_sqlite_ingest_writers_take_turns_on_a_lock_beside_the_database(tmp_path: Path) -> None:
    """Two stores on one file (as two ingest processes have) write batches at once; every report lands."""
    path = tmp_path / "s.sqlite"
    stores = [Store(str(path)), Store(str(path))]
    batches = [[("lab", benchmark_report(f"d{i % 5}")) for i in range(200)] for _ in range(10)]
    new = [0, 0]

    def write(n: int) -> None:
        for b in batches[n::2]:
            new[n] += stores[n].add_reports(b)

    threads = [threading.Thread(target=write, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(new) == 2000 and stores[0].count_reports() == 2000
    assert (tmp_path / "s.sqlite-ingest.lock").exists()
    for s in stores:
        s.close()


def test_a_postgresql_database_without_temporary_tables_gets_multi_row_inserts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.pgdb import private_postgres

    monkeypatch.setattr(store_bulk, "_inserts", {})  # what other stores' databases allowed
    with private_postgres("edgeloop_notemp") as url:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            name = conn.exec_driver_sql("SELECT current_database()").scalar()
            conn.exec_driver_sql(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC, CURRENT_USER')
        engine.dispose()
        store = Store(url)
        try:
            batch: list[tuple[str, p.AnyReport]] = [("lab", benchmark_report(f"d{i}")) for i in range(20)]
            assert store.add_reports(batch) == 20 and store.add_reports(batch) == 0
            assert store.latest_benchmarks("lab").keys() == {("lab", f"d{i}") for i in range(20)}
            assert store_bulk._inserts and all(x.head and not x.copy for x in store_bulk._inserts.values())
        finally:
            store.close()
