"""Field re-calibration: send ``recalibrate`` commands, follow them, promote what a device kept.

``POST /api/v1/recalibrations`` sends one command per device (a device, or every online device of a
fleet), each stored before it is published (``host.fleet.recalibration``); ``GET`` lists them with
their state and outcome; ``POST .../{id}/promote`` and ``POST /api/v1/devices/{fleet}/{device}/promote``
swap in a calibration a device kept (``promote: manual``). ``GET /calibration-sets/{sha256}.tar.gz``
serves the image sets the host packed for ``source: url``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from host.fleet.recalibration import RecalibrateRequest, RecalibrationError
from host.fleet.web import auth
from host.fleet.web.deps import FleetHost
from host.fleet.web.encode import recalibration_json
from shared import protocol

T = TypeVar("T")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibration_id: str | None = Field(None, description="default: the device's latest kept calibration")


def _answer(call: Callable[[], T]) -> T:
    try:
        return call()
    except RecalibrationError as e:
        raise HTTPException(e.status, str(e)) from e


def router(host: FleetHost) -> APIRouter:
    api = APIRouter(dependencies=[Depends(auth.operator(host.auth))])  # every route: the operator token
    service, store = host.recalibrations, host.store

    @api.post("/api/v1/recalibrations", status_code=201)
    def start(req: RecalibrateRequest) -> dict[str, Any]:
        sent, skipped = _answer(lambda: service.start(req))
        return {
            "command_ids": [r.command_id for r in sent],
            "recalibrations": [recalibration_json(r) for r in sent],
            "skipped": skipped,
        }

    @api.get("/api/v1/recalibrations")
    def list_all(fleet: str | None = None, device: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first, each with its state and the device's CalibrationReport (``outcome``)."""
        return [recalibration_json(r) for r in store.recalibrations(fleet, device, min(max(1, limit), 5000))]

    @api.get("/api/v1/recalibrations/{command_id}")
    def show(command_id: str) -> dict[str, Any]:
        r = store.recalibration(command_id)
        if r is None:
            raise HTTPException(404, f"no recalibration {command_id}")
        return recalibration_json(r)

    @api.post("/api/v1/recalibrations/{command_id}/promote", status_code=201)
    def promote(command_id: str) -> dict[str, Any]:
        return recalibration_json(_answer(lambda: service.promote(command_id)))

    @api.post("/api/v1/devices/{fleet}/{device}/promote", status_code=201)
    def promote_device(fleet: protocol.Id, device: protocol.Id, body: PromoteRequest | None = None) -> dict[str, Any]:
        cid = (body or PromoteRequest()).calibration_id
        return recalibration_json(_answer(lambda: service.promote_latest(fleet, device, cid)))

    @api.get("/calibration-sets/{name}")
    def calibration_set(name: str) -> FileResponse:
        path = service.sets.path(name)
        if path is None:
            raise HTTPException(404, "no such calibration set")
        return FileResponse(path, media_type="application/gzip", headers={"Cache-Control": "public, immutable"})

    return api
