"""The rollouts API: list, show, start, abort, roll back (operator token: reads show command ids)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from host.fleet.rollout_config import RolloutConfig
from host.fleet.web import auth
from host.fleet.web.deps import FleetHost
from host.fleet.web.encode import rollout_json
from shared import protocol


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release: str = Field(description="name@version, or name for the latest version")
    fleet: protocol.Id
    config: RolloutConfig = RolloutConfig()


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("requested through the API", max_length=1000)


def router(host: FleetHost) -> APIRouter:
    api = APIRouter(prefix="/api/v1/rollouts", dependencies=[Depends(auth.operator(host.auth))])
    store = host.store

    def show(rollout_id: str) -> dict[str, Any]:
        r = store.rollout(rollout_id)
        if r is None:
            raise HTTPException(404, f"no rollout {rollout_id}")
        return rollout_json(r)

    @api.get("")
    def list_rollouts() -> list[dict[str, Any]]:
        details = (store.rollout(r.id) for r in store.rollouts())
        return [rollout_json(d) for d in details if d is not None]

    @api.get("/{rollout_id}")
    def get_rollout(rollout_id: str) -> dict[str, Any]:
        return show(rollout_id)

    @api.post("", status_code=201)
    def start_rollout(req: RolloutRequest) -> dict[str, Any]:
        host.sync_releases()
        manifest = host.release_store.resolve(req.release)
        return show(host.controller.create(manifest, req.fleet, req.config))

    @api.post("/{rollout_id}/abort")
    def abort(rollout_id: str, req: ReasonRequest | None = None) -> dict[str, Any]:
        host.controller.abort(rollout_id, (req or ReasonRequest()).reason)
        return show(rollout_id)

    @api.post("/{rollout_id}/rollback")
    def rollback(rollout_id: str, req: ReasonRequest | None = None) -> dict[str, Any]:
        host.controller.rollback(rollout_id, (req or ReasonRequest()).reason)
        return show(rollout_id)

    return api
