"""Devices: the latest status of each device (upserted by ingest; a Last Will keeps the release).

``last_seen`` only moves forward: a status dated earlier than the one stored (a Last Will is dated when
the device connected; a retained status comes again on reconnect) still sets the state, not the time,
and one dated in the future counts as the host's clock + ``MAX_CLOCK_SKEW`` (``bounded_sent_at``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from host.fleet.store.base import StoreBase, aware, bounded_sent_at, now
from host.fleet.store.records import DeviceRecord
from host.fleet.store.schema import devices
from shared.protocol import DeviceStatus, SystemInfo


def _device(row: Any) -> DeviceRecord:
    m = dict(row._mapping)
    m["last_seen"] = aware(m["last_seen"])
    m["system"] = SystemInfo.model_validate(m["system"]) if m["system"] is not None else None
    m["warnings"] = tuple(m["warnings"] or ())
    return DeviceRecord(**m)


class DeviceQueries(StoreBase):
    def upsert_status(self, status: DeviceStatus) -> None:
        status = bounded_sent_at(status, now())
        values = {
            "fleet": status.fleet,
            "device_id": status.device_id,
            "state": status.state,
            "release_name": status.release.name if status.release else None,
            "release_version": status.release.version if status.release else None,
            "previous_name": status.previous_release.name if status.previous_release else None,
            "previous_version": status.previous_release.version if status.previous_release else None,
            "runtime": status.runtime,
            "runtime_version": status.runtime_version,
            "precision": status.precision,
            "accelerator": status.accelerator,
            "gpu": status.gpu,
            "agent_version": status.agent_version,
            "system": status.system.model_dump(mode="json") if status.system else None,
            "last_seen": status.sent_at,
            "warnings": list(status.warnings),
        }
        stmt = self._insert(devices).values(**values)
        update: dict[str, Any] = {k: v for k, v in values.items() if k not in ("fleet", "device_id")}
        if status.state == "offline":  # a Last Will knows nothing about the release: keep what we had
            update = {"state": "offline"}
        stored, sent = devices.c.last_seen, stmt.excluded.last_seen
        update["last_seen"] = sa.case((stored > sent, stored), else_=sent)  # never back in time
        self._write(stmt.on_conflict_do_update(index_elements=["fleet", "device_id"], set_=update))

    def devices(self, fleet: str | None = None) -> list[DeviceRecord]:
        q = sa.select(devices).order_by(devices.c.fleet, devices.c.device_id)
        if fleet:
            q = q.where(devices.c.fleet == fleet)
        with self.engine.connect() as conn:
            return [_device(r) for r in conn.execute(q)]
