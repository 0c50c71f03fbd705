"""Field samples from the host's side: ask a device for images (a ``sample`` command), list and fetch them.

``POST /api/v1/devices/{fleet}/{device}/samples`` stores the request (``host.fleet.samples``), then
publishes the command, whose ``upload_url`` names the request; the device uploads to
``/api/v1/upload`` (``web.upload``). ``GET .../samples/{command_id}`` says what has arrived and
whether the device is done (its ``samples_uploaded`` event, or the error it answered with). Every route
needs the operator token: the images are the fleet's data (camera frames), reads included.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from host.fleet.samples import SampleRequest, SampleUploadError
from host.fleet.web import auth
from host.fleet.web.deps import FleetHost
from host.fleet.web.encode import event_json
from shared import protocol

DONE_EVENT = "samples_uploaded"  # what device/commands/sample.py reports once it has sent them all


class SampleAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_images: int = Field(16, ge=1, le=1000, description="how many field images to upload")


def router(host: FleetHost) -> APIRouter:
    api = APIRouter(prefix="/api/v1/devices/{fleet}/{device}/samples", dependencies=[Depends(auth.operator(host.auth))])
    store, samples = host.store, host.samples

    def known(fleet: str, device: str, command_id: str) -> SampleRequest:
        try:
            req = samples.request(fleet, device, command_id)
        except SampleUploadError as e:
            raise HTTPException(e.status, str(e)) from e
        if req is None:
            raise HTTPException(404, f"no sample request {command_id} for {fleet}/{device}")
        return req

    @api.post("", status_code=201)
    def ask(fleet: protocol.Id, device: protocol.Id, body: SampleAsk | None = None) -> dict[str, Any]:
        n = (body or SampleAsk()).n_images
        found = [d for d in store.devices(fleet) if d.device_id == device]
        if not found:
            raise HTTPException(404, f"no device {device!r} in fleet {fleet!r}")
        if found[0].state == "offline":
            raise HTTPException(409, f"{fleet}/{device} is offline; ask again when it is back")
        cid = uuid.uuid4()
        url = f"{host.base_url}api/v1/upload?command={cid}"
        cmd = host.signer.sign(protocol.SampleCommand(message_id=cid, device_id=device, n_images=n, upload_url=url))
        samples.create(fleet, device, str(cid), n)  # before the command: the first upload may be quick
        if not host.publish(protocol.command_topic(fleet, device), protocol.encode(cmd)):
            samples.cancel(fleet, device, str(cid))
            raise HTTPException(503, "the MQTT broker did not take the sample command; is it reachable?")
        return {"command_id": str(cid), "fleet": fleet, "device_id": device, "n_images": n, "upload_url": url}

    @api.get("/{command_id}")
    def status(fleet: protocol.Id, device: protocol.Id, command_id: str) -> dict[str, Any]:
        req = known(fleet, device, command_id)
        files = samples.files(fleet, device, req.command_id)
        events = [e for e in store.command_events(req.command_id) if (e.fleet, e.report.device_id) == (fleet, device)]
        error = next((e.report.message for e in events if e.report.level == "error"), None)
        finished = any(e.report.code == DONE_EVENT for e in events)
        return {
            "command_id": req.command_id,
            "fleet": fleet,
            "device_id": device,
            "n_images": req.n_images,
            "created_at": req.created_at.isoformat(),
            "files": files,
            "received": len(files),
            "done": len(files) >= req.n_images or finished or error is not None,
            "error": error,
            "events": [event_json(e) for e in events],
        }

    @api.get("/{command_id}/{name}")
    def image(fleet: protocol.Id, device: protocol.Id, command_id: str, name: str) -> FileResponse:
        req = known(fleet, device, command_id)
        path = samples.path(fleet, device, req.command_id, name)
        if path is None:
            raise HTTPException(404, f"no image {name!r} in sample request {req.command_id}")
        media = {".png": "image/png", ".bmp": "image/bmp", ".webp": "image/webp"}.get(path.suffix, "image/jpeg")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    return api
