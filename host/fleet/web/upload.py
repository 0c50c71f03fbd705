"""Field images sent by a device's ``sample`` command: checked, size-limited, stored under our own names."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request

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


def router(uploads: Path) -> APIRouter:
    api = APIRouter()

    @api.post("/api/v1/upload", status_code=201)
    async def upload(request: Request) -> dict[str, Any]:
        """Field images sent by a device's ``sample`` command (raw body, one image per request)."""
        device = protocol.check_id(request.headers.get("X-Edgeloop-Device", ""), "device")
        fleet_id = protocol.check_id(request.headers.get("X-Edgeloop-Fleet", "default"), "fleet")
        body = await _read_limited(request)
        try:
            imaging.decode(body)
        except EdgeloopError as e:
            raise HTTPException(415, f"not an image: {e}") from e
        suffix = ".png" if body[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
        dest = uploads / fleet_id / device
        dest.mkdir(parents=True, exist_ok=True)
        name = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}{suffix}"  # never the client's file name
        (dest / name).write_bytes(body)
        return {"stored": f"{fleet_id}/{device}/{name}", "bytes": len(body)}

    return api
