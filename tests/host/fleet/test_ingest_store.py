"""One bad row never loses a batch (SQLite and, with EDGELOOP_TEST_POSTGRES_URL, PostgreSQL): a batch the
database refuses is split down to the rows it refuses, the rest is stored; a store that is down refuses
nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from host.fleet.store import Store
from host.fleet.store import reports as store_reports
from host.fleet.store.reports import StoreUnavailableError
from host.fleet.store.schema import benchmarks
from shared import protocol as p
from tests.host.fleet.factories import telemetry_report
from tests.host.fleet.stores import BACKENDS, open_store
from tests.shared.factories import benchmark_report


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as s:
        yield s


def _batch(n: int = 100, devices: int = 5) -> list[tuple[str, p.AnyReport]]:
    """n good reports from ``devices`` devices: benchmarks, events and served telemetry."""
    out: list[tuple[str, p.AnyReport]] = []
    for i in range(n):
        device = f"d{i % devices}"
        kinds: list[p.AnyReport] = [
            benchmark_report(device),
            p.EventReport(device_id=device, level="info", code="x", message="m"),
            telemetry_report(device),
        ]
        out.append(("lab", kinds[i % 3]))
    return out


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Message ids whose report row the database refuses: a NOT NULL column left empty (both dialects)."""
    ids: set[str] = set()
    row = store_reports._report_row

    def refused_row(fleet: str, r: p.AnyReport, received: Any, payload: str | None = None) -> dict[str, Any]:
        out = row(fleet, r, received, payload)
        if str(r.message_id) in ids:
            out["payload"] = None
        return out

    monkeypatch.setattr(store_reports, "_report_row", refused_row)
    yield ids


def test_one_refused_row_is_left_out_and_the_rest_of_its_batch_is_stored(store: Store, poisoned: set[str]) -> None:
    batch = _batch()
    bad = benchmark_report("d2")
    poisoned.add(str(bad.message_id))
    items = [*batch[:37], ("lab", bad), *batch[37:]]
    with pytest.raises(sa.exc.IntegrityError):
        store.add_reports(items)  # as one batch, the database refuses all of it
    salvaged = store.add_reports_salvaging(items)
    assert salvaged.new == 100
    assert [(r.fleet, r.report.message_id) for r in salvaged.refused] == [("lab", bad.message_id)]
    assert "IntegrityError" in salvaged.refused[0].error
    assert store.count_reports() + store.count_telemetry() == 100
    with store.engine.connect() as conn:  # the flattened benchmark rows went in with their reports
        assert conn.execute(sa.select(sa.func.count()).select_from(benchmarks)).scalar() == 34
    assert store.add_reports_salvaging(items).new == 0  # redelivered: idempotent, the bad row refused again


def test_several_refused_rows_in_one_batch(store: Store, poisoned: set[str]) -> None:
    batch = _batch(200)
    for i in (0, 1, 99, 199):
        poisoned.add(str(batch[i][1].message_id))
    salvaged = store.add_reports_salvaging(batch)
    assert salvaged.new == 196 and len(salvaged.refused) == 4


def test_a_nul_byte_postgresql_will_not_store(store: Store) -> None:
    """A valid wire report (the wire does not forbid NUL in ``runtime``) that PostgreSQL refuses: its
    batch used to be lost whole."""
    bad = benchmark_report("d1", runtime="onnx\x00runtime")
    items = [*_batch(50), ("lab", p.decode_report(p.encode(bad)))]
    salvaged = store.add_reports_salvaging(items)
    if store.dialect == "postgresql":
        assert salvaged.new == 50 and [r.report.message_id for r in salvaged.refused] == [bad.message_id]
        error = salvaged.refused[0].error  # the driver's ("cannot contain NUL") or the server's (binary COPY)
        assert "NUL" in error or "0x00" in error
    else:  # SQLite stores it
        assert salvaged.new == 51 and not salvaged.refused


def test_an_integer_sqlite_cannot_bind_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-DBAPI error from the driver (sqlite3's OverflowError) is a refused row too."""
    row = store_reports._benchmark_row
    bad = benchmark_report("d1")

    def huge(fleet: str, r: p.BenchmarkReport) -> dict[str, Any]:
        out = row(fleet, r)
        if r.message_id == bad.message_id:
            out["n_images"] = 2**70
        return out

    monkeypatch.setattr(store_reports, "_benchmark_row", huge)
    salvaged = store.add_reports_salvaging([*_batch(20), ("lab", bad)])
    assert salvaged.new == 20 and [r.report.message_id for r in salvaged.refused] == [bad.message_id]


def test_a_store_that_is_down_refuses_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def down(items: object, payloads: object = None) -> int:
        calls.append(items)
        raise sa.exc.OperationalError("INSERT ...", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "add_reports", down)
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        store.add_reports_salvaging(_batch(10))
    assert len(calls) == 1  # not split: splitting a batch cannot help a store that is down


def test_unavailable_errors_are_told_from_refused_rows() -> None:
    assert store_reports.is_unavailable(sa.exc.OperationalError("x", {}, Exception("database is locked")))
    assert store_reports.is_unavailable(sa.exc.InterfaceError("x", {}, Exception("closed")))
    invalidated = sa.exc.DBAPIError("x", {}, Exception("gone"), connection_invalidated=True)
    assert store_reports.is_unavailable(invalidated)
    assert not store_reports.is_unavailable(sa.exc.IntegrityError("x", {}, Exception("NOT NULL")))
    assert not store_reports.is_unavailable(sa.exc.DataError("x", {}, Exception("NUL")))
    assert not store_reports.is_unavailable(OverflowError("int too large"))


def test_duplicates_within_and_across_salvaged_halves(store: Store, poisoned: set[str]) -> None:
    a = benchmark_report("d1", message_id=uuid.uuid4())
    bad = benchmark_report("d1")
    poisoned.add(str(bad.message_id))
    salvaged = store.add_reports_salvaging([("lab", a), ("lab", bad), ("lab", a), ("lab", a)])
    assert salvaged.new == 1 and len(salvaged.refused) == 1
    assert store.count_reports() == 1
