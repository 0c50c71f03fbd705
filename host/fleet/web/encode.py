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

from host.fleet.store.records import EventRecord, RolloutDetail

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # typeshed only: the type of "any dataclass instance"


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
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
