"""Bounds for the two HTTP servers (the device's inference API, the host's ``edgeloop serve``), both
uvicorn with httptools: how many connections, and how big and how slow a request may be.

uvicorn bounds connections (``limit_concurrency``: a 503 beyond it; idle connections count too) and
idle keep-alive time, but with httptools nothing bounds a request head: measured here (uvicorn 0.55,
httptools 0.9), 20 MB of headers were taken without complaint, and a client that sends half a head
and stops, or connects and sends nothing, holds its connection for ever (h11's
``h11_max_incomplete_event_size`` caps the size, not the time; uvicorn has no header timeout). So
``shared.httpprotocol.BoundedHttpTools`` adds both: the head must be whole within
``header_timeout_s`` (408, or a quiet close if nothing came) and within ``max_header_kb`` (431).
Bodies are the apps' to read: the image routes stop at their size limits and answer 408 after
``body_timeout_s``; the protocol closes any request whose body is still incomplete a little later.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import EdgeloopError

if TYPE_CHECKING:
    import uvicorn


class HttpLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(
        128, ge=2, le=100_000, description="open connections (idle ones too) beyond which requests get 503"
    )
    keep_alive_s: int = Field(5, ge=1, le=3600, description="an idle keep-alive connection is closed after this")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="a request head must arrive whole within this")
    max_header_kb: int = Field(64, ge=1, le=1024, description="largest request head (request line and headers)")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="a request body must arrive whole within this")


def bounded_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``limits`` on every request's head and body."""
    try:
        from shared.httpprotocol import BoundedHttpTools
    except ImportError as e:  # uvicorn and httptools are in the device and host extras
        raise EdgeloopError(f"the HTTP server needs uvicorn and httptools ({e}): pip install 'edgeloop[device]'") from e
    bounds = {
        "header_timeout_s": limits.header_timeout_s,
        "max_head_bytes": limits.max_header_kb * 1024,
        "body_timeout_s": limits.body_timeout_s,
    }
    return type("BoundedHttpTools", (BoundedHttpTools,), bounds)


def uvicorn_config(app: Any, host: str, port: int, limits: HttpLimits, **kwargs: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` for ``app`` with ``limits`` applied (``kwargs``: TLS files and the like)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_protocol(limits),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,
        log_level="warning",
        access_log=False,
        lifespan="off",
        **kwargs,
    )
