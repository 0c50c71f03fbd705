"""Field images sent by a device's ``sample`` command: authenticated by the device's upload token
(``host.fleet.web.auth``), checked, bounded in size (1 MiB each) and in count (what the command asked for),
stored under our own names (``host.fleet.samples``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from host.fleet.samples import FieldSamples, SampleUploadError, command_id_of
from host.fleet.web.auth import ApiAuth
from shared import imaging, protocol
from shared.errors import EdgeloopError

MAX_UPLOAD = 1 << 20


async def _read_limited(request: Request) -> bytes:
    length = int(request.headers.get("Content-Length") or 0)
    if length > MAX_UPLOAD:
        raise HTTPException(413, f"images are limited to {MAX_UPLOAD} bytes")
    buf = bytearray()
    async for chunk in request.stream():  # a chunked body has no Content-Length: stop at the limit
        buf += chunk
        if len(buf) > MAX_UPLOAD:
            raise HTTPException(413, f"images are limited to {MAX_UPLOAD} bytes")
    return bytes(buf)


def router(samples: FieldSamples, auth: ApiAuth) -> APIRouter:
    api = APIRouter()

    @api.post("/api/v1/upload", status_code=201)
    async def upload(request: Request, command: str | None = None) -> dict[str, Any]:
        """One field image of a ``sample`` command (raw body): only into a request this host made.

        The command id comes from the upload URL the command carried (``?command=ID``) or from an
        ``X-Edgeloop-Command`` header; each request takes at most the images it asked for. The device
        sends its upload token (``Authorization: Bearer``), which names its fleet and id.
        """
        device = protocol.check_id(request.headers.get("X-Edgeloop-Device", ""), "device")
        fleet_id = protocol.check_id(request.headers.get("X-Edgeloop-Fleet", "default"), "fleet")
        auth.check_upload(request, fleet_id, device)  # before anything about the request is looked up
        command = command or request.headers.get("X-Edgeloop-Command")
        try:
            if not command:
                raise SampleUploadError(
                    403, "uploads answer a sample request of this host: its upload_url carries ?command=ID"
                )
            samples.check_open(fleet_id, device, command)  # before reading a body nobody asked for
            body = await _read_limited(request)
            try:
                imaging.decode(body)
            except EdgeloopError as e:
                raise SampleUploadError(415, f"not an image: {e}") from e
            suffix = ".png" if body[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
            name = samples.add(fleet_id, device, command, body, suffix)
        except SampleUploadError as e:
            raise HTTPException(e.status, str(e)) from e
        cid = command_id_of(command)
        return {"stored": f"{fleet_id}/{device}/{cid}/{name}", "command_id": cid, "bytes": len(body)}

    return api
