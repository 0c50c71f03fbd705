"""Rollouts, their waves and member devices: all the controller's state, so a restarted host resumes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from host.fleet.rollout_config import RolloutConfig
from host.fleet.store.base import UNSET, StoreBase, Unset, aware, aware_or_none, given, now
from host.fleet.store.records import (
    DeviceRolloutState,
    RolloutDetail,
    RolloutDeviceRecord,
    RolloutMember,
    RolloutRecord,
    RolloutState,
    WaveRecord,
    WaveState,
    WaveSummary,
)
from host.fleet.store.schema import rollout_devices, rollout_waves, rollouts
from shared.errors import EdgeloopError
from shared.protocol import ReleaseManifest


def _rollout_fields(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    m["config"] = RolloutConfig.model_validate(m["config"])
    m["created_at"], m["updated_at"] = aware(m["created_at"]), aware(m["updated_at"])
    return m


def _wave(row: Any) -> WaveRecord:
    m = dict(row._mapping)
    for k in ("started_at", "deadline", "finished_at"):
        m[k] = aware_or_none(m[k])
    m["summary"] = WaveSummary.model_validate(m["summary"]) if m["summary"] is not None else None
    return WaveRecord(**m)


def _member(row: Any) -> RolloutDeviceRecord:
    m = dict(row._mapping)
    m["updated_at"] = aware(m["updated_at"])
    return RolloutDeviceRecord(**m)


class RolloutQueries(StoreBase):
    def create_rollout(
        self,
        rollout_id: str,
        manifest: ReleaseManifest,
        fleet: str,
        config: RolloutConfig,
        waves: list[list[RolloutMember]],
    ) -> None:
        t = now()
        statements: list[Any] = [
            rollouts.insert().values(
                id=rollout_id,
                release_name=manifest.name,
                release_version=manifest.version,
                fleet=fleet,
                state="running",
                config=config.model_dump(mode="json"),
                current_wave=0,
                reason="",
                created_at=t,
                updated_at=t,
            )
        ]
        for i, members in enumerate(waves):
            statements.append(rollout_waves.insert().values(rollout_id=rollout_id, wave=i, state="pending"))
            statements += [
                rollout_devices.insert().values(
                    rollout_id=rollout_id,
                    wave=i,
                    state="pending",
                    published=False,
                    updated_at=t,
                    device_id=m.device_id,
                    previous_name=m.previous_name,
                    previous_version=m.previous_version,
                    was_online=m.was_online,
                )
                for m in members
            ]
        try:
            self._write(*statements)
        except sa.exc.IntegrityError as e:  # ux_rollouts_active_fleet: another replica started one just now
            raise EdgeloopError(f"fleet {fleet} already has a rollout in progress; abort it first") from e

    def rollouts(self, state: RolloutState | None = None) -> list[RolloutRecord]:
        q = sa.select(rollouts).order_by(rollouts.c.created_at)
        if state:
            q = q.where(rollouts.c.state == state)
        with self.engine.connect() as conn:
            return [RolloutRecord(**_rollout_fields(r)) for r in conn.execute(q)]

    def rollout(self, rollout_id: str) -> RolloutDetail | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
            if r is None:
                return None
            waves = conn.execute(
                sa.select(rollout_waves).where(rollout_waves.c.rollout_id == rollout_id).order_by(rollout_waves.c.wave)
            )
            members = conn.execute(
                sa.select(rollout_devices)
                .where(rollout_devices.c.rollout_id == rollout_id)
                .order_by(rollout_devices.c.wave, rollout_devices.c.device_id)
            )
            return RolloutDetail(
                **_rollout_fields(r),
                waves=tuple(_wave(w) for w in waves),
                devices=tuple(_member(d) for d in members),
            )

    def update_rollout(
        self,
        rollout_id: str,
        *,
        state: RolloutState | Unset = UNSET,
        reason: str | Unset = UNSET,
        current_wave: int | Unset = UNSET,
        only_if: frozenset[RolloutState] | None = None,
    ) -> bool:
        """False when nothing changed: no such rollout, or (``only_if``) it is in another state by now,
        changed by another replica (an abort through the API) since it was read."""
        values = given(state=state, reason=reason, current_wave=current_wave)
        stmt = rollouts.update().where(rollouts.c.id == rollout_id).values(updated_at=now(), **values)
        if only_if is not None:
            stmt = stmt.where(rollouts.c.state.in_(sorted(only_if)))
        return self._write(stmt) == 1

    def update_wave(
        self,
        rollout_id: str,
        wave: int,
        *,
        state: WaveState | Unset = UNSET,
        started_at: datetime | Unset = UNSET,
        deadline: datetime | Unset = UNSET,
        finished_at: datetime | Unset = UNSET,
        summary: WaveSummary | Unset = UNSET,
    ) -> None:
        values = given(state=state, started_at=started_at, deadline=deadline, finished_at=finished_at)
        if not isinstance(summary, Unset):
            values["summary"] = summary.model_dump(mode="json")
        self._write(
            rollout_waves.update()
            .where(rollout_waves.c.rollout_id == rollout_id, rollout_waves.c.wave == wave)
            .values(**values)
        )

    def update_rollout_device(
        self,
        rollout_id: str,
        device_id: str,
        *,
        state: DeviceRolloutState | Unset = UNSET,
        command_id: str | Unset = UNSET,
        command: str | Unset = UNSET,
        published: bool | Unset = UNSET,
        previous_name: str | Unset = UNSET,
        previous_version: str | Unset = UNSET,
        top1: float | Unset | None = UNSET,
        p99_ms: float | Unset | None = UNSET,
        error: str | Unset | None = UNSET,
        epoch: int | Unset | None = UNSET,
    ) -> None:
        values = given(
            epoch=epoch,
            state=state,
            command_id=command_id,
            command=command,
            published=published,
            previous_name=previous_name,
            previous_version=previous_version,
            top1=top1,
            p99_ms=p99_ms,
            error=error,
        )
        self._write(
            rollout_devices.update()
            .where(rollout_devices.c.rollout_id == rollout_id, rollout_devices.c.device_id == device_id)
            .values(updated_at=now(), **values)
        )
