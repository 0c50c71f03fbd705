"""HTTP side of ``edgeloop serve``: artifacts (with Range requests), REST API, dashboard, /metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from host.fleet.rollout import RolloutConfig
from shared import imaging, protocol
from shared.errors import EdgeloopError

if TYPE_CHECKING:
    from host.fleet.server import HostServer

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 1 << 20
_SHA_FILE = re.compile(r"^[0-9a-f]{64}\.onnx$")


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release: str = Field(description="name@version, or name for the latest version")
    fleet: protocol.Id
    config: RolloutConfig = RolloutConfig()


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("requested through the API", max_length=1000)


def _json_rollout(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items() if k not in ("waves", "devices")}
    if "waves" in r:
        out["waves"] = [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in w.items()} for w in r["waves"]
        ]
        out["devices"] = [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in d.items() if k != "command"}
            for d in r["devices"]
        ]
    return out


def create_app(server: HostServer) -> FastAPI:
    app = FastAPI(title="edgeloop", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")
    store, releases = server.store, server.release_store

    @app.exception_handler(EdgeloopError)
    async def _edgeloop_error(request: Request, exc: EdgeloopError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    # -- artifacts: content-addressed, immutable ------------------------------------------------
    @app.get("/artifacts/{filename}")
    def artifact(filename: str) -> FileResponse:
        if not _SHA_FILE.match(filename):
            raise HTTPException(404, "no such artifact")
        path = releases.artifacts / filename
        if not path.is_file():
            raise HTTPException(404, "no such artifact")
        # FileResponse answers Range requests (206), which device downloads use to resume
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    @app.get("/releases/{name}/{version}.json")
    def manifest_file(name: str, version: str) -> Response:
        try:
            m = releases.load(name, version)
        except (EdgeloopError, ValueError) as e:
            raise HTTPException(404, str(e)) from e
        return Response(m.model_dump_json(indent=2), media_type="application/json")

    # -- REST API --------------------------------------------------------------------------------
    @app.get("/api/v1/health")
    def health() -> dict[str, Any]:
        return {
            "ok": True,
            "broker_connected": server.publisher.connected.is_set(),
            "ingest": [vars(i.stats) | {"seen_ids": None} for i in server.ingests],
            "store": store.dialect,
        }

    @app.get("/api/v1/fleet")
    def fleet(fleet: str | None = None) -> list[dict[str, Any]]:
        return server.fleet(fleet)

    @app.get("/api/v1/releases")
    def list_releases() -> list[dict[str, Any]]:
        server.sync_releases()
        return [m.model_dump(mode="json", exclude={"recipe"}) for m in store.releases()]

    @app.get("/api/v1/rollouts")
    def list_rollouts() -> list[dict[str, Any]]:
        return [_json_rollout(store.rollout(r["id"]) or r) for r in store.rollouts()]

    @app.get("/api/v1/rollouts/{rollout_id}")
    def get_rollout(rollout_id: str) -> dict[str, Any]:
        r = store.rollout(rollout_id)
        if r is None:
            raise HTTPException(404, f"no rollout {rollout_id}")
        return _json_rollout(r)

    @app.post("/api/v1/rollouts", status_code=201)
    def start_rollout(req: RolloutRequest) -> dict[str, Any]:
        server.sync_releases()
        manifest = releases.resolve(req.release)
        rollout_id = server.controller.create(manifest, req.fleet, req.config)
        return _json_rollout(store.rollout(rollout_id) or {"id": rollout_id})

    @app.post("/api/v1/rollouts/{rollout_id}/abort")
    def abort(rollout_id: str, req: ReasonRequest | None = None) -> dict[str, Any]:
        server.controller.abort(rollout_id, (req or ReasonRequest()).reason)
        return _json_rollout(store.rollout(rollout_id) or {})

    @app.post("/api/v1/rollouts/{rollout_id}/rollback")
    def rollback(rollout_id: str, req: ReasonRequest | None = None) -> dict[str, Any]:
        server.controller.rollback(rollout_id, (req or ReasonRequest()).reason)
        return _json_rollout(store.rollout(rollout_id) or {})

    @app.get("/api/v1/telemetry")
    def telemetry(fleet: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        rows = store.benchmark_series(fleet, min(max(1, limit), 20000))
        return [{**r, "sent_at": r["sent_at"].isoformat()} for r in rows]

    @app.get("/api/v1/events")
    def events(limit: int = 100) -> list[dict[str, Any]]:
        return store.events(min(max(1, limit), 1000))

    @app.post("/api/v1/upload", status_code=201)
    async def upload(request: Request) -> dict[str, Any]:
        """Field images sent by a device's ``sample`` command (raw body, one image per request)."""
        device = protocol.check_id(request.headers.get("X-Edgeloop-Device", ""), "device")
        fleet_id = protocol.check_id(request.headers.get("X-Edgeloop-Fleet", "default"), "fleet")
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD:
            raise HTTPException(413, f"images are limited to {MAX_UPLOAD} bytes")
        buf = bytearray()
        async for chunk in request.stream():  # a chunked body has no Content-Length: stop at the limit
            buf += chunk
            if len(buf) > MAX_UPLOAD:
                raise HTTPException(413, f"images are limited to {MAX_UPLOAD} bytes")
        body = bytes(buf)
        try:
            imaging.decode(body)
        except EdgeloopError as e:
            raise HTTPException(415, f"not an image: {e}") from e
        suffix = ".png" if body[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
        dest = server.uploads / fleet_id / device
        dest.mkdir(parents=True, exist_ok=True)
        name = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}{suffix}"  # never the client's file name
        (dest / name).write_bytes(body)
        return {"stored": f"{fleet_id}/{device}/{name}", "bytes": len(body)}

    # -- metrics and dashboard ------------------------------------------------------------------
    @app.get("/metrics")
    def metrics() -> Response:
        from host.fleet.web.metrics import render

        body, content_type = render(server)
        return Response(body, media_type=content_type)

    @app.get("/")
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
