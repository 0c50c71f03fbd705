"""What one device sends cannot change what the host shows about another (issue 22, items 2, 3 and 5).

SQLite and, with EDGELOOP_TEST_POSTGRES_URL, PostgreSQL:

* a CalibrationReport or an error event that names a recalibrate command counts only when it comes
  from the device (of the fleet) the command went to, as the rollout gates' reports do;
* the views shared by every device list what the host received last (``received_at``, its own clock),
  a ``sent_at`` in the future is stored as at most the host's clock + ``MAX_CLOCK_SKEW``, and a
  device's ``last_seen`` only moves forward;
* a batch that repeats a ``message_id`` keeps its first report, in every table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from host.fleet.store import Store
from host.fleet.store.base import MAX_CLOCK_SKEW as SKEW
from host.fleet.store.calibration_records import RecalibrationRecord
from host.fleet.store.records import R
from host.fleet.store.schema import MIGRATIONS, reports, schema_version
from shared import protocol as p
from tests.host.fleet.factories import REF, calibration_report, recalibrate_command, telemetry_report
from tests.host.fleet.stores import BACKENDS, open_store
from tests.shared.factories import benchmark_report

pytestmark = pytest.mark.security

FAR = dt.datetime(2199, 12, 31, tzinfo=dt.timezone.utc)  # the wire takes sent_at up to 2200


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as s:
        for device, fleet in (("d1", "lab"), ("d2", "lab"), ("d1", "other")):
            s.upsert_status(p.DeviceStatus(device_id=device, fleet=fleet, state="online", release=REF))
        yield s


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _sent(store: Store, device: str = "d1", **kw: object) -> p.RecalibrateCommand:
    cmd = recalibrate_command(device, **kw)
    store.add_recalibration("lab", cmd, REF)
    store.mark_recalibration_published(str(cmd.message_id))
    return cmd


# -- item 2: recalibration outcomes are bound to the commanded device -------------------------------------
def _seen(r: RecalibrationRecord | None) -> tuple[str, str | None, str | None]:
    """A recalibration's state, who its outcome came from and its error: what the views show."""
    if r is None:
        raise LookupError("no such recalibration")
    source = f"{r.outcome.fleet}/{r.outcome.device_id}" if r.outcome is not None else None
    return r.state, source, r.error


def test_another_device_cannot_answer_a_recalibration(store: Store) -> None:
    cid = _sent(store).message_id
    store.add_reports([  # later by sent_at than the real answer: the old code took the latest by sent_at
        ("lab", calibration_report("d2", command_id=cid, sent_at=FAR)),
        ("other", calibration_report("d1", command_id=cid, sent_at=FAR)),  # the same device id in another fleet
    ])  # fmt: skip
    assert _seen(store.recalibration(str(cid))) == ("sent", None, None)  # still waiting for lab/d1
    store.add_reports([("lab", calibration_report("d1", command_id=cid, top1_after=0.5, better=False, promoted=False))])
    assert _seen(store.recalibration(str(cid))) == ("rejected", "lab/d1", None)


def test_another_device_cannot_fail_a_recalibration_with_an_error_event(store: Store) -> None:
    cid = _sent(store).message_id
    store.add_reports([
        ("lab", p.EventReport(device_id="d2", level="error", code="command_failed", message="forged", command_id=cid)),
        ("other", p.EventReport(device_id="d1", level="error", code="command_failed", message="x", command_id=cid)),
    ])  # fmt: skip
    assert _seen(store.recalibration(str(cid))) == ("sent", None, None)
    store.add_reports([("lab", p.EventReport(device_id="d1", level="error", code="command_failed",
                                             message="no release", command_id=cid))])  # fmt: skip
    assert _seen(store.recalibration(str(cid))) == ("failed", None, "command_failed: no release")


def test_another_device_cannot_promote_a_kept_calibration(store: Store) -> None:
    kept = _sent(store, promote=False)
    store.add_reports([("lab", calibration_report("d1", command_id=kept.message_id, promoted=False))])
    promote = _sent(store, action="promote", calibration_id=kept.message_id)
    store.add_reports([("lab", calibration_report("d2", command_id=promote.message_id, action="promote",
                                                  n_images=0, evaluation="none", top1_before=None,
                                                  top1_after=None))])  # fmt: skip
    assert _seen(store.recalibration(str(kept.message_id)))[0] == "kept"
    assert _seen(store.recalibration(str(promote.message_id))) == ("sent", None, None)
    (d1,) = (d for d in store.fleet("lab") if d.device_id == "d1")
    assert d1.calibration is not None and d1.calibration.state == "kept"
    (d2,) = (d for d in store.fleet("lab") if d.device_id == "d2")
    assert d2.calibration is not None and d2.calibration.before is None  # not d1's figures


# -- item 3: the host's clock orders shared views; sent_at and last_seen are bounded ---------------------
def test_a_device_cannot_bury_other_devices_reports_with_a_future_sent_at(store: Store) -> None:
    store.add_reports([
        ("lab", p.EventReport(device_id="d2", level="info", code="noise", message="m", sent_at=FAR)),
        ("lab", benchmark_report("d2", sent_at=FAR)),
        ("lab", telemetry_report("d2", sent_at=FAR)),
        ("lab", calibration_report("d2", sent_at=FAR)),
    ])  # fmt: skip
    before = _now()
    store.add_reports([
        ("lab", p.EventReport(device_id="d1", level="error", code="artifact_sha256_mismatch", message="m")),
        ("lab", benchmark_report("d1")),
        ("lab", telemetry_report("d1")),
        ("lab", calibration_report("d1")),
    ])  # fmt: skip
    (event,) = store.events(limit=1)
    assert event.report.device_id == "d1" and event.report.code == "artifact_sha256_mismatch", event
    assert [b.device_id for b in store.benchmark_series("lab", limit=1)] == ["d1"]
    assert [t.device_id for t in store.telemetry_series("lab", limit=1)] == ["d1"]
    assert [c.device_id for c in store.calibrations("lab", limit=1)] == ["d1"]
    # what d2 sent is stored no later than the host's clock + the skew, payload and columns alike
    latest = _now() + SKEW
    (ev2,) = (e for e in store.events() if e.report.device_id == "d2")
    assert ev2.report.sent_at <= latest, ev2.report.sent_at
    assert all(b.sent_at <= latest for b in store.benchmark_series("lab"))
    assert all(t.sent_at <= latest for t in store.telemetry_series("lab"))
    assert all(c.sent_at <= latest for c in store.calibrations("lab"))
    assert store.latest_benchmarks("lab")[("lab", "d2")].sent_at >= before  # capped, not dropped


def test_last_seen_is_bounded_and_never_moves_back(store: Store) -> None:
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", sent_at=FAR))
    (d1,) = (d for d in store.devices("lab") if d.device_id == "d1")
    capped = d1.last_seen
    assert capped <= _now() + SKEW, capped
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="busy", sent_at=_now() - SKEW * 12))
    (d1,) = (d for d in store.devices("lab") if d.device_id == "d1")
    assert d1.state == "busy" and d1.last_seen == capped  # the status counts; its older time does not
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="offline", sent_at=_now() - SKEW))
    (d1,) = (d for d in store.devices("lab") if d.device_id == "d1")
    assert d1.state == "offline" and d1.last_seen == capped  # a Last Will (sent at connect time) too


# -- item 5: a message id repeated inside one batch -----------------------------------------------------
def test_a_repeated_message_id_in_one_batch_keeps_the_first_report_everywhere(store: Store) -> None:
    bench = benchmark_report("d1", top1=0.9)
    served = telemetry_report("d1", requests=300)
    calib = calibration_report("d1", top1_after=0.81)
    again: list[tuple[str, p.AnyReport]] = [
        ("lab", bench.model_copy(update={"top1": 0.1})),
        ("lab", served.model_copy(update={"requests": 5})),
        ("lab", calib.model_copy(update={"top1_after": 0.1})),
    ]
    assert store.add_reports([("lab", bench), ("lab", served), ("lab", calib), *again]) == 3
    (b,) = store.benchmark_series("lab")
    (t,) = store.telemetry_series("lab")
    (c,) = store.calibrations("lab")
    assert (b.top1, t.requests, c.top1_after) == (0.9, 300, 0.81)
    assert store.served_totals("lab")[("lab", "d1")]["requests"] == 300.0
    assert _logged(store, p.BenchmarkReport) == [bench] and _logged(store, p.CalibrationReport) == [calib]


def _logged(store: Store, model: type[R]) -> list[R]:
    """The reports of one kind as the report log (``reports``) holds them."""
    kind = model.model_fields["kind"].default
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(reports.c.payload).where(reports.c.kind == kind)).scalars().all()
    return [model.model_validate_json(r) for r in rows]


def test_a_v5_store_gains_received_at_for_its_benchmarks(store: Store) -> None:
    """The v6 step gives ``benchmarks`` the host's clock: older rows get the time their report was logged."""
    store.add_reports([("lab", benchmark_report("d1")), ("lab", p.EventReport(device_id="d1", level="info",
                                                                              code="x", message="m"))])  # fmt: skip
    (logged,) = store.benchmark_series("lab")
    with store.engine.begin() as conn:
        for index in ("ix_bench_received", "ix_reports_kind_received", "ix_telemetry_received"):
            conn.execute(sa.text(f"DROP INDEX {index}"))
        conn.execute(sa.text("ALTER TABLE benchmarks DROP COLUMN received_at"))
        conn.execute(schema_version.delete().where(schema_version.c.version >= 6))
    assert store.version() == 5 and store.migrate() == len(MIGRATIONS) == 7  # v6, and v7 again (idempotent)
    assert store.migrate() == 7 and store.version() == 7  # idempotent
    (b,) = store.benchmark_series("lab")
    assert b.received_at == logged.received_at and b.sent_at == logged.sent_at
    assert [e.report.code for e in store.events()] == ["x"]
