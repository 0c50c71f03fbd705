"""Field images sent by a device's ``sample`` command: authenticated by the device's upload token
(``host.fleet.web.auth``), checked, bounded in size (1 MiB each, ``imaging.MAX_PIXELS`` decoded) and in
count (what the command asked for), stored under our own names (``host.fleet.samples``).

The check decodes the image in a worker thread (at most ``DECODE_THREADS`` at once), so the event loop
keeps serving the API, the dashboard and artifact downloads meanwhile. A refused image is a JSON
error: 413 over the pixel cap (from its header, before decoding), 415 not a JPEG/PNG/BMP/WebP, 400
one the decoder refuses; 408 when the body does not arrive in time."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request

from host.fleet.samples import FieldSamples, SampleUploadError, command_id_of
from host.fleet.web.auth import ApiAuth
from shared import imaging, protocol
from shared.imageheader import ImageError, ImageHeader, ImageTooLargeError, UnsupportedImageError

MAX_UPLOAD = 1 << 20
DECODE_THREADS = 2  # each decode may hold imaging.MAX_PIXELS x 3 bytes


async def _read_limited(request: Request, timeout_s: float) -> bytes:
    length = int(request.headers.get("Content-Length") or 0)
    if length > MAX_UPLOAD:
        raise HTTPException(413, f"images are limited to {MAX_UPLOAD} bytes")
    buf = bytearray()
    try:
        with anyio.fail_after(timeout_s):  # a device that trickles its body must not hold a connection
            async for chunk in request.stream():  # a chunked body has no Content-Length: stop at the limit
                buf += chunk
                if len(buf) > MAX_UPLOAD:
                    raise HTTPException(413, f"images are limited to {MAX_UPLOAD} bytes")
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {timeout_s:g} s", {"Connection": "close"}) from None
    return bytes(buf)


def _check_image(body: bytes) -> ImageHeader:
    """Runs in a worker thread: the header (format, pixel cap), then a full decode."""
    try:
        found = imaging.header(body)
        imaging.decode(body)
    except ImageTooLargeError as e:
        raise SampleUploadError(413, str(e)) from e
    except UnsupportedImageError as e:
        raise SampleUploadError(415, f"not an image: {e}") from e
    except ImageError as e:
        raise SampleUploadError(400, str(e)) from e
    return found


def router(samples: FieldSamples, auth: ApiAuth, body_timeout_s: float = 30.0) -> APIRouter:
    api = APIRouter()
    decoders = anyio.CapacityLimiter(DECODE_THREADS)

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
            body = await _read_limited(request, body_timeout_s)
            found = await anyio.to_thread.run_sync(_check_image, body, limiter=decoders)
            name = samples.add(fleet_id, device, command, body, found.suffix)
        except SampleUploadError as e:
            raise HTTPException(e.status, str(e)) from e
        cid = command_id_of(command)
        return {"stored": f"{fleet_id}/{device}/{cid}/{name}", "command_id": cid, "bytes": len(body)}

    return api
