"""Secrets of the REST API: the operator's API token and the devices' upload tokens.

* The **API token** is one random string (``secrets.token_urlsafe``); ``edgeloop serve`` reads it from
  ``EDGELOOP_API_TOKEN`` or ``--api-token-file`` (written 0600 with a fresh token when the file is missing).
* A device's **upload token** is ``HMAC-SHA256(upload secret, "edgeloop-upload-v1" fleet device)``: the host
  keeps one secret (``upload-secret`` in the PKI folder) and checks any device's token without a table of
  them, and a token names exactly one fleet and device, so one device's token cannot upload as another.

Every comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from shared import protocol
from shared.errors import EdgeloopError

UPLOAD_CONTEXT = b"edgeloop-upload-v1"
MIN_TOKEN_CHARS = 16


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), also when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def read_token(path: Path, what: str = "API token") -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise EdgeloopError(f"cannot read the {what} file {path}: {e}") from e
    check_token(token, f"the {what} in {path}")
    return token


def check_token(token: str, what: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        raise EdgeloopError(f"{what} must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces")
    return token


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in ``path``; a new one written there (0600) when the file does not exist. Returns (token, created)."""
    if path.exists():
        return read_token(path), False
    token = new_token()
    write_private(path, (token + "\n").encode())
    return token, True


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two tokens (non-ASCII input is simply unequal)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def load_upload_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise EdgeloopError(f"cannot read the upload secret {path}: {e}") from e
    if len(secret) < 32:
        raise EdgeloopError(f"the upload secret {path} is too short; make one with `edgeloop certs init`")
    return secret


def new_upload_secret() -> bytes:
    return secrets.token_hex(32).encode()


def upload_token(secret: bytes, fleet: str, device: str) -> str:
    """The upload token of ``fleet``/``device`` (ids checked, so no separator can be smuggled in)."""
    msg = b"\0".join((UPLOAD_CONTEXT, protocol.check_id(fleet, "fleet").encode(), protocol.check_id(device).encode()))
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def upload_token_ok(secret: bytes, fleet: str, device: str, given: str) -> bool:
    return same(given, upload_token(secret, fleet, device))
