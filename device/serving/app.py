"""The inference HTTP API (Starlette on uvicorn): ``POST /v1/classify``, ``GET /v1/stats``, ``GET /healthz``.

Bad input is answered with a 4xx and a JSON body ``{"error": kind, "message": ...}``, counted by
kind, and never reaches the model: the wrong content type (415), a body over the limit (413),
bytes that are not an image or a truncated JPEG/PNG (400). A full queue or a server that is not
ready yet answers 503.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from device.serving.batcher import Answer, ServingError
from shared import imaging
from shared.errors import EdgeloopError
from shared.imaging import U8Image

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp", "application/octet-stream")


class Serving(Protocol):
    """What the HTTP layer needs of ``InferenceServer``."""

    max_body_bytes: int

    @property
    def ready(self) -> bool: ...

    async def classify(self, image: U8Image, raw: bytes) -> Answer: ...

    def count_error(self, kind: str) -> None: ...

    def stats(self) -> dict[str, object]: ...


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status, media_type="application/json")


def _error(serving: Serving, e: ServingError) -> Response:
    serving.count_error(e.kind)
    return _json({"error": e.kind, "message": str(e)}, e.status)


async def _read_body(request: Request, limit: int) -> bytes:
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
    async for chunk in request.stream():  # a chunked body has no Content-Length: stop at the limit
        body += chunk
        if len(body) > limit:
            raise ServingError("too_large", f"the body is over the limit of {limit:,} bytes", 413)
    return bytes(body)


def _decode(body: bytes) -> U8Image:
    if not body:
        raise ServingError("not_image", "the body is empty: send one encoded image (JPEG/PNG)", 400)
    if (why := imaging.truncation(body)) is not None:
        raise ServingError("truncated", why, 400)
    try:
        return imaging.decode(body)
    except EdgeloopError as e:
        raise ServingError("not_image", str(e), 400) from e


def create_app(serving: Serving) -> Starlette:
    async def classify(request: Request) -> Response:
        try:
            body = await _read_body(request, serving.max_body_bytes)
            answer = await serving.classify(_decode(body), body)
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
