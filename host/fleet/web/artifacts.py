"""Artifacts and manifests, as files: content-addressed and immutable, with Range requests."""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response

from host.fleet.release import ReleaseStore
from shared.errors import EdgeloopError

_SHA_FILE = re.compile(r"^[0-9a-f]{64}\.onnx$")


def router(releases: ReleaseStore) -> APIRouter:
    api = APIRouter()

    @api.get("/artifacts/{filename}")
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

    @api.get("/releases/{name}/{version}.json")
    def manifest_file(name: str, version: str) -> Response:
        try:
            m = releases.load(name, version)
        except (EdgeloopError, ValueError) as e:
            raise HTTPException(404, str(e)) from e
        return Response(m.model_dump_json(indent=2), media_type="application/json")

    return api
