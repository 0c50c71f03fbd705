"""Who may call the REST API (deploy/SECURITY.md, "The REST API").

* **Operator token** (``Authorization: Bearer <token>``): every write (rollouts, abort, rollback, sample
  requests) and every read of fleet data (devices, releases list, telemetry, events, rollouts with their
  command ids, field images, /metrics). Compared in constant time; a missing or wrong token is a 401.
* **Device upload token**: ``POST /api/v1/upload`` takes the token of the fleet and device it names
  (``host.fleet.tokens``); another device's token is a 403.
* **No token**: the artifacts and manifests (signed, content-addressed: devices fetch them), the dashboard
  page and its static files (it asks for the token), ``/api/v1/health`` and the API schema.

Without a configured token the server runs *open*, which ``HostServer`` allows on a loopback bind only
(the demo, a lab box). Open mode still refuses what a web page could do from the operator's browser: a
request whose Host is not this machine (DNS rebinding) and a cross-site write (CSRF).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from host.fleet import tokens

BEARER = "bearer "
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edgeloop"'}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` (and its subdomains); not ``0.0.0.0`` or a LAN address."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ApiAuth:
    """The API's credentials: ``token`` None means open (loopback development)."""

    token: str | None = field(default=None, repr=False)
    upload_secret: bytes | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "token" if self.token is not None else "open (loopback only)"

    def check_operator(self, request: Request) -> None:
        if self.token is None:
            self._check_local(request)
            return
        given = bearer(request)
        if given is None:
            raise HTTPException(
                401,
                "this edgeloop API needs a token: send 'Authorization: Bearer <token>' (the CLI reads "
                "EDGELOOP_API_TOKEN or --token-file; the token is in the file given to serve --api-token-file)",
                headers=CHALLENGE,
            )
        if not tokens.same(given, self.token):
            raise HTTPException(401, "the API token was refused (not this server's token)", headers=CHALLENGE)

    def check_upload(self, request: Request, fleet: str, device: str) -> None:
        """A device's upload: its own upload token, or (open mode, no upload secret) the local checks only."""
        if self.upload_secret is None:
            if self.token is None:
                self._check_local(request)
                return
            raise HTTPException(
                401,
                "this host takes no device uploads: start serve with --upload-secret-file (from `edgeloop certs init`)",
                headers=CHALLENGE,
            )
        given = bearer(request)
        if given is None:
            raise HTTPException(
                401,
                "uploads need the device's upload token (upload.token from `edgeloop certs device`, "
                "upload_token_file in agent.toml)",
                headers=CHALLENGE,
            )
        if not tokens.upload_token_ok(self.upload_secret, fleet, device, given):
            raise HTTPException(403, f"this upload token is not the one of {fleet}/{device}")

    def _check_local(self, request: Request) -> None:
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        if not is_loopback(host):
            raise HTTPException(
                403,
                f"this server runs without an API token and answers only requests addressed to this machine, "
                f"not to {host!r}; give serve --api-token-file to open it to others",
            )
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("origin")
        cross = request.headers.get("sec-fetch-site") in ("cross-site", "same-site")
        if cross or (origin is not None and urlsplit(origin).netloc != request.headers.get("host")):
            raise HTTPException(403, "cross-site write refused (this server runs without an API token)")


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    if value[: len(BEARER)].lower() != BEARER:
        return None
    return value[len(BEARER) :].strip() or None


def operator(auth: ApiAuth) -> Callable[[Request], None]:
    """A FastAPI dependency: the operator token (or open mode's local checks)."""

    def check(request: Request) -> None:
        auth.check_operator(request)

    return check
