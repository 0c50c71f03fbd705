"""Field re-calibration in the store (SQLite and, with EDGELOOP_TEST_POSTGRES_URL, PostgreSQL): the
commands the host sent, the CalibrationReports that answer them, their states, the fleet view's
``calibration`` and ``int8_gate``, and the v3 -> v4 upgrade."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from host.fleet.store import Store
from host.fleet.store.schema import MIGRATIONS, schema_version
from shared import protocol as p
from tests.host.fleet.factories import REF, calibration_report, recalibrate_command
from tests.host.fleet.stores import BACKENDS, open_store

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as s:
        s.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", release=REF))
        yield s


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _sent(store: Store, **kw: object) -> p.RecalibrateCommand:
    cmd = recalibrate_command("d1", **kw)
    store.add_recalibration("lab", cmd, REF)
    store.mark_recalibration_published(str(cmd.message_id))
    return cmd


def test_calibration_reports_are_flattened_once(store: Store) -> None:
    a = calibration_report(sent_at=_at(0))
    b = calibration_report(sent_at=_at(1), evaluation="agreement", top1_before=None, top1_after=None,
                           agreement_before=0.7, agreement_after=0.95, moved_ranges=())  # fmt: skip
    assert store.add_reports([("lab", a), ("lab", b), ("lab", a)]) == 2
    assert store.add_reports([("lab", a)]) == 0  # redelivered: nothing new
    first, second = store.calibrations("lab")
    assert first.message_id == str(a.message_id) and first.sent_at == a.sent_at and first.received_at.tzinfo
    assert first.moved_ranges == a.moved_ranges and first.form == "u8s8_reduce_range" and first.promoted
    assert (first.before, first.after) == (0.62, 0.81)  # labelled: top-1
    assert (second.before, second.after) == (0.7, 0.95) and second.moved_ranges == ()  # agreement with FP32
    assert store.count_reports("calibration") == 2  # the report log keeps them too


def test_bounds_of_the_wire_fit_the_columns(store: Store) -> None:
    longest_version = "999999.999999.999999.999999"  # the longest the wire takes
    extreme = calibration_report(
        "d" * 64,
        release=p.ReleaseRef(name="n" * 64, version=longest_version),
        method="m" * 32, source="s" * 256, n_images=10_000_000, n_eval=10_000_000, form="f" * 32,
        form_reason="r" * 512, artifact="a" * 160, calibration_s=1e7, build_s=1e7, error="e" * 4096,
        moved_ranges=tuple(p.RangeShift(tensor="t" * 256, before=1e9, after=0, change=-1e6) for _ in range(10)),
    )  # fmt: skip
    assert store.add_reports([("f" * 64, extreme)]) == 1
    (row,) = store.calibrations(device="d" * 64)
    assert row.release_version == longest_version and row.n_images == 10_000_000 and len(row.moved_ranges) == 10
    assert row.error == "e" * 4096


def test_commands_are_stored_before_they_are_published(store: Store) -> None:
    cmd = recalibrate_command("d1", source="local", calib_dir="/data/field", eval_dir="/data/eval", promote=False)
    store.add_recalibration("lab", cmd, REF)
    (r,) = store.recalibrations("lab")
    assert r.state == "unsent" and r.command == cmd and r.release == REF and not r.promote
    assert store.unpublished_recalibrations() == [("lab", cmd)]
    assert store.unpublished_recalibrations(older_than_s=60) == []  # the request that stored it still sends it
    store.mark_recalibration_published(str(cmd.message_id))
    assert store.unpublished_recalibrations() == [] and store.recalibration(str(cmd.message_id)).state == "sent"  # type: ignore[union-attr]
    assert store.recalibration(str(uuid.uuid4())) is None and store.recalibrations(device="other") == []


def test_states_follow_the_answers(store: Store) -> None:
    auto = _sent(store)
    worse = _sent(store)
    kept = _sent(store, promote=False)
    refused = _sent(store, source="local", calib_dir="/black")
    broken = _sent(store)
    store.add_reports([
        ("lab", calibration_report(command_id=auto.message_id)),
        ("lab", calibration_report(command_id=worse.message_id, top1_after=0.1, better=False, promoted=False)),
        ("lab", calibration_report(command_id=kept.message_id, promoted=False)),
        ("lab", calibration_report(command_id=refused.message_id, n_images=0, error="constant images", promoted=False,
                                   evaluation="none", top1_before=None, top1_after=None, better=None)),
        ("lab", p.EventReport(device_id="d1", level="error", code="command_failed", message="no release",
                              command_id=broken.message_id)),
    ])  # fmt: skip
    states = {r.command_id: r for r in store.recalibrations("lab", "d1")}
    assert states[str(auto.message_id)].state == "promoted"
    assert states[str(worse.message_id)].state == "rejected"
    assert states[str(kept.message_id)].state == "kept"
    assert states[str(refused.message_id)].state == "failed" and states[str(refused.message_id)].error == (
        "constant images"
    )
    assert states[str(broken.message_id)].state == "failed"
    assert states[str(broken.message_id)].error == "command_failed: no release"
    # the kept one, promoted later: its own state follows the promote command's answer
    promote = _sent(store, action="promote", calibration_id=kept.message_id)
    assert store.recalibration(str(promote.message_id)).state == "sent"  # type: ignore[union-attr]
    store.add_reports([("lab", calibration_report(command_id=promote.message_id, action="promote", n_images=0,
                                                  evaluation="none", top1_before=None, top1_after=None))])  # fmt: skip
    again = store.recalibration(str(kept.message_id))
    assert again is not None and again.state == "promoted" and again.promoted_by == str(promote.message_id)
    assert store.recalibration(str(promote.message_id)).state == "promoted"  # type: ignore[union-attr]


def test_the_fleet_view_has_the_latest_calibration_and_int8_gate_event(store: Store) -> None:
    (d,) = store.fleet("lab")
    assert d.calibration is None and d.int8_gate is None
    kept = _sent(store, promote=False)
    store.add_reports([("lab", calibration_report(command_id=kept.message_id, promoted=False, sent_at=_at(0)))])
    (d,) = store.fleet("lab")
    assert d.calibration is not None and d.calibration.state == "kept" and not d.calibration.promoted
    assert (d.calibration.before, d.calibration.after, d.calibration.evaluation) == (0.62, 0.81, "labelled")
    promote = _sent(store, action="promote", calibration_id=kept.message_id)
    store.add_reports([("lab", calibration_report(command_id=promote.message_id, action="promote", n_images=0,
                                                  evaluation="none", top1_before=None, top1_after=None,
                                                  sent_at=_at(5)))])  # fmt: skip
    (d,) = store.fleet("lab")
    c = d.calibration
    assert c is not None and c.action == "promote" and c.state == "promoted" and c.promoted
    assert (c.before, c.after, c.evaluation) == (0.62, 0.81, "labelled")  # the figures of what it swapped in
    assert c.at == _at(5) and c.command_id == str(promote.message_id) and c.release == "r20@1.0.0"
    # a calibration this host did not send (a command from elsewhere) still shows, by its report alone
    store.add_reports([("lab", calibration_report(better=False, promoted=False, sent_at=_at(9)))])
    (d,) = store.fleet("lab")
    assert d.calibration is not None and d.calibration.state == "rejected"
    gate = [
        p.EventReport(device_id="d1", level="error", code="int8_verification_failed", message="drop 30 points",
                      release=REF, sent_at=_at(1)),
        p.EventReport(device_id="d1", level="info", code="int8_requantized", message="re-quantized", sent_at=_at(2)),
        p.EventReport(device_id="d1", level="warning", code="slow_network", message="x", sent_at=_at(3)),
    ]  # fmt: skip
    store.add_reports([("lab", gate[0])])
    (d,) = store.fleet("lab")
    assert d.int8_gate is not None and d.int8_gate.code == "int8_verification_failed"
    assert d.int8_gate.release == "r20@1.0.0" and d.int8_gate.at == _at(1) and d.int8_gate.level == "error"
    store.add_reports([("lab", gate[1]), ("lab", gate[2])])
    (d,) = store.fleet("lab")
    assert d.int8_gate is not None and d.int8_gate.code == "int8_requantized"  # the gate's latest, not any event's
    assert store.fleet("other") == []


def test_a_v3_store_upgrades_in_place(store: Store) -> None:
    """A store made before re-calibration gets the new tables, and its events their codes."""
    ev = p.EventReport(device_id="d1", level="error", code="int8_verification_failed", message="m", sent_at=_at(0))
    store.add_reports([("lab", ev)])
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE recalibrations"))
        conn.execute(sa.text("DROP TABLE calibrations"))
        conn.execute(sa.text("DROP INDEX ix_reports_code"))
        conn.execute(sa.text("ALTER TABLE reports DROP COLUMN code"))
        conn.execute(schema_version.delete().where(schema_version.c.version >= 4))
    assert store.version() == 3
    assert store.migrate() == len(MIGRATIONS)
    assert store.version() == len(MIGRATIONS) and store.count_reports("event") == 1
    (d,) = store.fleet("lab")
    assert d.int8_gate is not None and d.int8_gate.code == "int8_verification_failed"  # the code was filled in
    assert store.add_reports([("lab", calibration_report())]) == 1 and len(store.calibrations()) == 1
