"""Field re-calibration: the recalibrate commands the host sent, and the CalibrationReports that answer them.

Commands are stored before they are published (the payload keeps its message id, so a re-send is a
duplicate the device drops). A command's outcome is the first CalibrationReport (or error event) that
names it *from the device, of the fleet, the command went to*: another device that names the command
(a forgery, or a bug) changes nothing, as for the rollout gates (``ReceivedReport.answers``).

Ingest flattens every CalibrationReport into ``calibrations`` in the same transaction as the report log
(``ReportQueries.add_reports``), idempotent on ``message_id``; the few strings the wire bounds more
loosely than the columns (release versions) are clipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from host.fleet.store.base import StoreBase, aware, now
from host.fleet.store.calibration_records import (
    GATE_CODES,
    CalibrationFlag,
    CalibrationRecord,
    GateEvent,
    RecalibrationRecord,
    report_state,
)
from host.fleet.store.schema import calibrations, recalibrations, reports
from shared.protocol import CalibrationReport, EventReport, RangeShift, RecalibrateCommand, ReleaseRef

Key = tuple[str, str]  # (fleet, device id)


def calibration_row(fleet: str, r: CalibrationReport, received: datetime) -> dict[str, Any]:
    return {
        "message_id": str(r.message_id),
        "command_id": str(r.command_id) if r.command_id else None,
        "fleet": fleet,
        "device_id": r.device_id,
        "rollout_id": r.rollout_id,
        "action": r.action,
        "release_name": r.release.name,
        "release_version": r.release.version[:32],
        "method": r.method,
        "source": r.source,
        "n_images": r.n_images,
        "n_eval": r.n_eval,
        "evaluation": r.evaluation,
        "top1_before": r.top1_before,
        "top1_after": r.top1_after,
        "agreement_before": r.agreement_before,
        "agreement_after": r.agreement_after,
        "precision_before": r.precision_before,
        "form": r.form,
        "form_reason": r.form_reason,
        "artifact": r.artifact,
        "calibration_s": r.calibration_s,
        "build_s": r.build_s,
        "moved_ranges": [m.model_dump(mode="json") for m in r.moved_ranges],
        "better": r.better,
        "promoted": r.promoted,
        "error": r.error,
        "sent_at": r.sent_at,
        "received_at": received,
    }


def _calibration(row: Any) -> CalibrationRecord:
    m = dict(row._mapping)
    m["sent_at"], m["received_at"] = aware(m["sent_at"]), aware(m["received_at"])
    m["moved_ranges"] = tuple(RangeShift.model_validate(x) for x in m["moved_ranges"] or ())
    return CalibrationRecord(**m)


def _answers(c: CalibrationRecord, sent: Mapping[str, RecalibrationRecord]) -> bool:
    """Whether ``c`` came from the device (of the fleet) its command went to."""
    command = sent.get(c.command_id or "")
    return command is not None and (command.fleet, command.device_id) == (c.fleet, c.device_id)


def _latest_per_device(table: sa.Table, *where: Any) -> Any:
    """``table``'s rows that are each device's latest (by ``sent_at``) among those matching ``where``."""
    t = table.c
    sub = (
        sa.select(t.fleet, t.device_id, sa.func.max(t.sent_at).label("at"))
        .where(*where)
        .group_by(t.fleet, t.device_id)
        .subquery()
    )
    on = sa.and_(t.fleet == sub.c.fleet, t.device_id == sub.c.device_id, t.sent_at == sub.c.at)
    return sa.select(table).join(sub, on).where(*where)


class CalibrationQueries(StoreBase):
    # -- the commands ---------------------------------------------------------------------------
    def add_recalibration(self, fleet: str, cmd: RecalibrateCommand, release: ReleaseRef | None) -> None:
        """Store a command before it is published (``published`` False until the broker has it)."""
        self._write(
            recalibrations.insert().values(
                command_id=str(cmd.message_id),
                fleet=fleet,
                device_id=cmd.device_id,
                action=cmd.action,
                promote=cmd.promote,
                calibration_id=str(cmd.calibration_id) if cmd.calibration_id else None,
                release_name=release.name if release else None,
                release_version=release.version[:32] if release else None,
                command=cmd.model_dump_json(),
                published=False,
                created_at=now(),
            )
        )

    def mark_recalibration_published(self, command_id: str) -> None:
        self._write(recalibrations.update().where(recalibrations.c.command_id == command_id).values(published=True))

    def unpublished_recalibrations(self, older_than_s: float = 0.0) -> list[tuple[str, RecalibrateCommand]]:
        """(fleet, command) of every stored command the broker never took, oldest first."""
        r = recalibrations.c
        q = (
            sa.select(r.fleet, r.command)
            .where(r.published.is_(False), r.created_at <= now() - timedelta(seconds=older_than_s))
            .order_by(r.created_at)
        )
        with self.engine.connect() as conn:
            return [(r[0], RecalibrateCommand.model_validate_json(r[1])) for r in conn.execute(q)]

    def recalibration(self, command_id: str) -> RecalibrationRecord | None:
        found = self._recalibrations(recalibrations.c.command_id == command_id)
        return found[0] if found else None

    def recalibrations(
        self, fleet: str | None = None, device: str | None = None, limit: int = 200
    ) -> list[RecalibrationRecord]:
        """The latest ``limit`` recalibrate commands (of a fleet, a device), newest first, with their outcomes."""
        where = []
        if fleet:
            where.append(recalibrations.c.fleet == fleet)
        if device:
            where.append(recalibrations.c.device_id == device)
        return self._recalibrations(*where, limit=limit)

    def _recalibrations(self, *where: Any, limit: int | None = None) -> list[RecalibrationRecord]:
        r = recalibrations.c
        q = sa.select(recalibrations).where(*where).order_by(r.created_at.desc(), r.command_id).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(q)]
        commanded = {row["command_id"]: (row["fleet"], row["device_id"]) for row in rows}
        outcomes = self._outcomes(commanded)
        errors = self._error_events({i: key for i, key in commanded.items() if i not in outcomes})
        promoted_by = self._promoted_by(list(commanded))
        return [
            RecalibrationRecord(
                **{
                    **row,
                    "command": RecalibrateCommand.model_validate_json(row["command"]),
                    "created_at": aware(row["created_at"]),
                },
                outcome=outcomes.get(row["command_id"]),
                error_event=errors.get(row["command_id"]),
                promoted_by=promoted_by.get(row["command_id"]),
            )
            for row in rows
        ]

    def _outcomes(self, commanded: Mapping[str, Key]) -> dict[str, CalibrationRecord]:
        """The CalibrationReport that answers each command (command id -> the (fleet, device) it went to):
        the first to arrive from that device; a report of any other device that names it is ignored."""
        if not commanded:
            return {}
        c = calibrations.c
        q = sa.select(calibrations).where(c.command_id.in_(list(commanded))).order_by(c.received_at, c.sent_at)
        out: dict[str, CalibrationRecord] = {}
        with self.engine.connect() as conn:
            for rec in map(_calibration, conn.execute(q)):
                cid = rec.command_id or ""
                if cid not in out and commanded.get(cid) == (rec.fleet, rec.device_id):
                    out[cid] = rec
        return out

    def _error_events(self, commanded: Mapping[str, Key]) -> dict[str, str]:
        """The first error event for each command from the device it went to (it could not even start it)."""
        if not commanded:
            return {}
        t = reports.c
        q = (
            sa.select(t.command_id, t.fleet, t.device_id, t.payload)
            .where(t.kind == "event", t.command_id.in_(list(commanded)))
            .order_by(t.received_at, t.sent_at)
        )
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for command_id, fleet, device_id, payload in conn.execute(q):
                if command_id in out or commanded.get(command_id) != (fleet, device_id):
                    continue
                e = EventReport.model_validate_json(payload)
                if e.level == "error":
                    out[command_id] = f"{e.code}: {e.message}"
        return out

    def _promoted_by(self, calibration_ids: list[str]) -> dict[str, str]:
        """Kept calibrations that a promote command swapped in: calibration id -> promote command id."""
        if not calibration_ids:
            return {}
        r = recalibrations.c
        q = sa.select(r.calibration_id, r.command_id, r.fleet, r.device_id).where(
            r.action == "promote", r.calibration_id.in_(calibration_ids)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        promotes = {command_id: calibration_id for calibration_id, command_id, _, _ in rows}
        done = self._outcomes({command_id: (fleet, device) for _, command_id, fleet, device in rows})
        return {promotes[cid]: cid for cid, c in done.items() if c.promoted}

    # -- the outcomes ---------------------------------------------------------------------------
    def calibrations(
        self, fleet: str | None = None, device: str | None = None, limit: int = 200
    ) -> list[CalibrationRecord]:
        """The latest ``limit`` CalibrationReports received (of a fleet, a device), oldest first."""
        c = calibrations.c
        q = sa.select(calibrations).order_by(c.received_at.desc(), c.sent_at.desc()).limit(limit)
        if fleet:
            q = q.where(calibrations.c.fleet == fleet)
        if device:
            q = q.where(calibrations.c.device_id == device)
        with self.engine.connect() as conn:
            rows = [_calibration(r) for r in conn.execute(q)]
        return rows[::-1]

    def latest_calibrations(self, fleet: str | None = None) -> dict[Key, CalibrationFlag]:
        """Each device's latest calibration outcome; a promote shows the figures of what it swapped in."""
        where = [calibrations.c.fleet == fleet] if fleet else []
        with self.engine.connect() as conn:
            latest = [_calibration(r) for r in conn.execute(_latest_per_device(calibrations, *where))]
        ids = [c.command_id for c in latest if c.command_id]
        sent = {r.command_id: r for r in self._recalibrations(recalibrations.c.command_id.in_(ids))} if ids else {}
        # the commands these reports answer: one that names another device's command answers none
        ours = {c.command_id: sent[c.command_id] for c in latest if c.command_id and _answers(c, sent)}
        swapped = self._swapped_in(cid for cid, command in ours.items() if command.action == "promote")
        out: dict[Key, CalibrationFlag] = {}
        for c in latest:
            command = ours.get(c.command_id or "")
            state = command.state if command is not None else report_state(c)  # a command of another host
            out[(c.fleet, c.device_id)] = CalibrationFlag.of(c, state, swapped.get(c.command_id or ""))
        return out

    def _swapped_in(self, promote_ids: Iterable[str]) -> dict[str, CalibrationRecord]:
        """promote command id -> the outcome of the calibration it promoted."""
        ids = list(promote_ids)
        if not ids:
            return {}
        r = recalibrations.c
        q = sa.select(r.command_id, r.calibration_id, r.fleet, r.device_id).where(r.command_id.in_(ids))
        with self.engine.connect() as conn:
            rows = [row for row in conn.execute(q) if row.calibration_id]
        targets = {row.command_id: row.calibration_id for row in rows}
        # the calibration a promote swapped in is the one that device answered (a promote goes where it ran)
        outcomes = self._outcomes({row.calibration_id: (row.fleet, row.device_id) for row in rows})
        return {cid: outcomes[cal] for cid, cal in targets.items() if cal in outcomes}

    def latest_gate_events(self, fleet: str | None = None) -> dict[Key, GateEvent]:
        """Each device's latest event of the INT8 gate (``int8_verification_failed``, ...)."""
        where = [reports.c.kind == "event", reports.c.code.in_(GATE_CODES)]
        if fleet:
            where.append(reports.c.fleet == fleet)
        out: dict[Key, GateEvent] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(_latest_per_device(reports, *where)):
                e = EventReport.model_validate_json(row.payload)
                release = str(e.release) if e.release else None
                out[(row.fleet, row.device_id)] = GateEvent(
                    code=e.code, level=e.level, message=e.message, release=release, at=e.sent_at
                )
        return out
