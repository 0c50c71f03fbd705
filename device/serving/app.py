"""The inference HTTP API (Starlette on uvicorn): ``POST /v1/classify``, ``GET /v1/stats``, ``GET /healthz``.

Bad input is answered with a 4xx and a JSON body ``{"error": kind, "message": ...}``, counted by
kind, and never reaches the model: the wrong content type (415), a body over the limit (413), an
image of more pixels than ``max_image_pixels`` (413 ``too_many_pixels``, from its header, before
decoding), bytes that are not a JPEG/PNG/BMP/WebP image, a truncated one or one the decoder
refuses (400), a body that does not arrive within ``body_timeout_s`` (408). A full queue or a
server that is not ready yet answers 503.

Images are decoded (and shrunk to the model's input size) in worker threads, at most
``decode_threads`` at once, so the event loop keeps answering ``/healthz`` and other requests while
they decode, and the queue holds model-sized images only.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Protocol

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from device.serving.batcher import Answer, ServingError
from shared import imaging
from shared.imageheader import ImageError, ImageTooLargeError
from shared.imaging import U8Image

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp", "application/octet-stream")


class Serving(Protocol):
    """What the HTTP layer needs of ``InferenceServer``."""

    max_body_bytes: int
    max_image_pixels: int
    body_timeout_s: float

    @property
    def ready(self) -> bool: ...

    @property
    def input_size(self) -> int | None:
        """The served model's input size (None before a model is loaded)."""
        ...

    async def classify(self, image: U8Image, raw: bytes) -> Answer: ...

    def count_error(self, kind: str) -> None: ...

    def stats(self) -> dict[str, object]: ...


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    return Response(data, status, headers=headers, media_type="application/json")


def _error(serving: Serving, e: ServingError) -> Response:
    serving.count_error(e.kind)
    # after a body that never came, the connection is in no state for another request
    headers = {"connection": "close"} if e.kind == "body_timeout" else None
    return _json({"error": e.kind, "message": str(e)}, e.status, headers)


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES and not ctype.startswith("image/"):
        raise ServingError(
            "wrong_content_type",
            f"content type {ctype or '(none)'!r} is not an image: send the encoded image as the body "
            "with Content-Type: image/jpeg or image/png",
            415,
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ServingError("too_large", f"the body is {int(length):,} bytes; the limit is {limit:,}", 413)
    body = bytearray()
    try:
        with anyio.fail_after(timeout_s):  # a client that trickles its body must not hold a connection
            async for chunk in request.stream():  # a chunked body has no Content-Length: stop at the limit
                body += chunk
                if len(body) > limit:
                    raise ServingError("too_large", f"the body is over the limit of {limit:,} bytes", 413)
    except TimeoutError:
        raise ServingError("body_timeout", f"the body did not arrive within {timeout_s:g} s", 408) from None
    return bytes(body)


def _decode(body: bytes, max_pixels: int, size: int | None) -> U8Image:
    """Runs in a worker thread: header checks, decode, and the shrink to the model's input size."""
    if not body:
        raise ServingError("not_image", "the body is empty: send one encoded image (JPEG/PNG)", 400)
    try:
        image = imaging.decode(body, strict=True, max_pixels=max_pixels)
    except ImageError as e:
        raise ServingError(e.kind, str(e), 413 if isinstance(e, ImageTooLargeError) else 400) from e
    return imaging.resize(image, size) if size else image


def create_app(serving: Serving, decode_threads: int = 2) -> Starlette:
    decoders = anyio.CapacityLimiter(decode_threads)  # each decode may hold max_image_pixels x 3 bytes

    async def decode(body: bytes) -> U8Image:
        work = partial(_decode, body, serving.max_image_pixels, serving.input_size)
        return await anyio.to_thread.run_sync(work, limiter=decoders)

    async def classify(request: Request) -> Response:
        try:
            body = await _read_body(request, serving.max_body_bytes, serving.body_timeout_s)
            answer = await serving.classify(await decode(body), body)
        except ServingError as e:
            return _error(serving, e)
        return _json(
            {
                "label": answer.label,
                "index": answer.index,
                "confidence": answer.confidence,
                "top": answer.top,
                "latency_ms": answer.latency_ms,
                "release": answer.release,
            }
        )

    async def stats(request: Request) -> Response:
        return _json(serving.stats())

    async def healthz(request: Request) -> Response:
        ok = serving.ready
        return _json({"ok": ok, "state": "ready" if ok else "warming_up"}, 200 if ok else 503)

    return Starlette(
        routes=[
            Route("/v1/classify", classify, methods=["POST"]),
            Route("/v1/stats", stats, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
