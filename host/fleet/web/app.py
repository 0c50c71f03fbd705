"""HTTP side of ``edgeloop serve``: artifacts (with Range requests), REST API, dashboard, /metrics.

One router per area (``artifacts``, ``rollouts``, ``fleet`` with telemetry, ``samples`` (asking a
device for field images) and ``upload`` (the device sending them), ``recalibrations`` (field
re-calibration), ``dashboard`` with /metrics); each gets only what it needs from the host process
(``deps.FleetHost``), and each guards its routes with ``auth`` (the operator token, or a device's upload
token; see that module for what stays open).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from host.fleet.web import artifacts, dashboard, fleet, recalibrations, rollouts, samples, upload
from host.fleet.web.deps import FleetHost
from shared.errors import EdgeloopError


async def _edgeloop_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=400)


def create_app(host: FleetHost) -> FastAPI:
    app = FastAPI(title="edgeloop", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.add_exception_handler(EdgeloopError, _edgeloop_error)
    app.include_router(artifacts.router(host.release_store))
    app.include_router(fleet.router(host))
    app.include_router(rollouts.router(host))
    app.include_router(samples.router(host))
    app.include_router(upload.router(host.samples, host.auth, host.http_limits.body_timeout_s))
    app.include_router(recalibrations.router(host))
    app.include_router(dashboard.router(host))
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app
