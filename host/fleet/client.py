"""A small client for the REST API of ``edgeloop serve`` (used by the CLI); it sends the API token when it
has one (``Authorization: Bearer``). HTTPS verifies against the system CAs, or SSL_CERT_FILE."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shared.errors import EdgeloopError


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raw = self._raw(method, path, body)
        return json.loads(raw or b"null")

    def _raw(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310  (the serve URL comes from the user's --server)
            self.base + path,
            data=data,
            method=method,
            headers=self._headers,
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                out: bytes = resp.read()
                return out
        except urllib.error.HTTPError as e:
            try:
                answer = json.loads(e.read())
                detail = _detail(answer.get("error") or answer.get("detail")) or e.reason
            except (ValueError, AttributeError):
                detail = e.reason
            hint = "" if e.code != 401 or "Authorization" in self._headers else " (no token given: --token-file)"
            raise EdgeloopError(f"{method} {path}: HTTP {e.code}: {detail}{hint}") from e
        except (urllib.error.URLError, OSError) as e:
            raise EdgeloopError(
                f"cannot reach edgeloop serve at {self.base} ({getattr(e, 'reason', e)}); is it running? (--server)"
            ) from e

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, body or {})

    def get_bytes(self, path: str) -> bytes:
        """A file (e.g. a field image), as bytes."""
        return self._raw("GET", path)


def _detail(detail: Any) -> Any:
    """FastAPI's 422 answer (a list of pydantic errors) as one readable line; anything else as it is."""
    if not isinstance(detail, list):
        return detail
    parts = []
    for err in detail:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") if isinstance(err, dict) else ""
        msg = err.get("msg", err) if isinstance(err, dict) else err
        parts.append(f"{where}: {msg}" if where else str(msg))
    return "; ".join(parts)


def fetch_samples(api: ApiClient, fleet: str, device: str, n: int, out: Path, timeout: float) -> dict[str, Any]:
    """Ask ``device`` for ``n`` field images and save them under ``out`` as they arrive."""
    base = f"/api/v1/devices/{fleet}/{device}/samples"
    cid = api.post(base, {"n_images": n})["command_id"]
    out.mkdir(parents=True, exist_ok=True)
    saved: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = api.get(f"{base}/{cid}")
        for name in state["files"][len(saved) :]:
            (out / name).write_bytes(api.get_bytes(f"{base}/{cid}/{name}"))
            saved.append(name)
        if state["error"]:
            raise EdgeloopError(f"{fleet}/{device} answered the sample command with: {state['error']}")
        if state["done"] and len(saved) >= state["received"]:
            break
        if time.monotonic() > deadline:
            raise EdgeloopError(
                f"timed out after {timeout:.0f} s with {len(saved)} of {n} field images from {fleet}/{device} "
                f"(saved in {out}); is the device online and serving? (--timeout)"
            )
        time.sleep(0.5)
    return {"command_id": cid, "fleet": fleet, "device_id": device, "requested": n, "received": len(saved),
            "out": str(out), "files": [str(out / f) for f in saved]}  # fmt: skip
