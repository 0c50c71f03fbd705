"""The store's records as the REST API's JSON (the CLI, the dashboard's app.js and tests read it).

Field names and order are the records' (which are the tables' columns); times are ISO 8601 with
their UTC offset; pydantic models (configs, summaries, reports) are dumped in JSON mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from host.fleet.store.calibration_records import CalibrationRecord, RecalibrationRecord
from host.fleet.store.records import EventRecord, RolloutDetail

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # typeshed only: the type of "any dataclass instance"


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def record_json(record: DataclassInstance, exclude: Collection[str] = ()) -> dict[str, Any]:
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record) if f.name not in exclude}


def rollout_json(r: RolloutDetail) -> dict[str, Any]:
    out = record_json(r, exclude=("waves", "devices"))
    out["waves"] = [record_json(w) for w in r.waves]
    # the stored command payload (a whole command, manifest included) is not part of the API
    out["devices"] = [record_json(d, exclude=("command",)) for d in r.devices]
    return out


def event_json(e: EventRecord) -> dict[str, Any]:
    return {"fleet": e.fleet, **e.report.model_dump(mode="json")}


def calibration_json(c: CalibrationRecord) -> dict[str, Any]:
    """A CalibrationReport as stored, with ``before``/``after``: the figures its evaluation compared."""
    return {**record_json(c), "before": c.before, "after": c.after}


def recalibration_json(r: RecalibrationRecord) -> dict[str, Any]:
    """A recalibrate command with its state and outcome (the stored payload itself is not part of the API)."""
    c = r.command
    return {
        "id": r.command_id,
        "fleet": r.fleet,
        "device_id": r.device_id,
        "action": r.action,
        "state": r.state,
        "promote": ("auto" if r.promote else "manual") if r.action == "calibrate" else None,
        "calibration_id": r.calibration_id,
        "release": str(r.release) if r.release else None,
        "options": c.model_dump(mode="json", include={"n_images", "method", "source", "calib_dir", "calib_url",
                                                      "eval_dir"}),
        "published": r.published,
        "created_at": r.created_at.isoformat(),
        "promoted_by": r.promoted_by,
        "error": r.error,
        "outcome": calibration_json(r.outcome) if r.outcome is not None else None,
    }  # fmt: skip
