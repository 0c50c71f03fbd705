"""The fleet and telemetry API: health (open), devices, releases, benchmark series, served telemetry, events
(operator token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from host.fleet.web import auth
from host.fleet.web.deps import FleetHost
from host.fleet.web.encode import event_json, record_json


def router(host: FleetHost) -> APIRouter:
    public = APIRouter(prefix="/api/v1")
    api = APIRouter(dependencies=[Depends(auth.operator(host.auth))])
    store = host.store

    @public.get("/health")
    def health() -> dict[str, Any]:
        return {
            "ok": True,
            "broker_connected": host.broker_connected(),
            "ingest": [vars(i.stats) | {"seen_ids": None} for i in host.ingests],
            "store": store.dialect,
            "auth": host.auth.mode,
            "replica": host.replica_status(),
        }

    @api.get("/fleet")
    def fleet(fleet: str | None = None) -> list[dict[str, Any]]:
        return [record_json(d) for d in store.fleet(fleet)]

    @api.get("/releases")
    def list_releases() -> list[dict[str, Any]]:
        host.sync_releases()
        return [m.model_dump(mode="json", exclude={"recipe"}) for m in store.releases()]

    @api.get("/telemetry")
    def telemetry(fleet: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        return [record_json(b) for b in store.benchmark_series(fleet, min(max(1, limit), 20000))]

    @api.get("/telemetry/live")
    def live_telemetry(fleet: str | None = None, device: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        """What devices served: one point per TelemetryReport (latency, throughput, errors, drift), oldest first."""
        return [record_json(t) for t in store.telemetry_series(fleet, device, min(max(1, limit), 20000))]

    @api.get("/events")
    def events(limit: int = 100) -> list[dict[str, Any]]:
        return [event_json(e) for e in store.events(min(max(1, limit), 1000))]

    public.include_router(api)
    return public
