"""The dashboard page (open: it asks for the API token) and Prometheus /metrics (operator token)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, Response

from host.fleet.web import auth
from host.fleet.web.deps import FleetHost
from host.fleet.web.metrics import render

STATIC = Path(__file__).parent / "static"


def router(host: FleetHost) -> APIRouter:
    api = APIRouter()

    # the fleet inventory (device ids, releases, latency): Prometheus sends the token (deploy/prometheus.yml)
    @api.get("/metrics", dependencies=[Depends(auth.operator(host.auth))])
    def metrics() -> Response:
        body, content_type = render(host.store, host.ingests)
        return Response(body, media_type=content_type)

    @api.get("/")
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return api
