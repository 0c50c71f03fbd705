"""ed25519 signing of release manifests and host commands (``cryptography``).

The signed bytes are the model's canonical JSON (sorted keys, no whitespace) without the
``signature`` field; ``key_id`` is inside the signed bytes, so it cannot be swapped afterwards.
Releases are signed by whoever cuts them (``edgeloop release create --sign-key``); commands by the
host that sends them (``edgeloop serve --command-key``); devices trust both through public keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import EdgeloopError
from shared.protocol import ReleaseManifest, SignedCommand


class SignatureError(EdgeloopError):
    """A manifest whose signature is missing, malformed, or made by an unknown key."""


Signed = TypeVar("Signed", bound=ReleaseManifest | SignedCommand)


def _what(model: ReleaseManifest | SignedCommand) -> str:
    if isinstance(model, ReleaseManifest):
        return f"release {model.ref}"
    return f"{getattr(model, 'kind', 'command')} command {model.message_id}"


def canonical_bytes(model: ReleaseManifest | SignedCommand) -> bytes:
    body = model.model_dump(mode="json", exclude={"signature"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new PEM key pair (private key mode 0600) and return its key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.exists():
        raise EdgeloopError(f"{private_path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(key.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise EdgeloopError(f"cannot load signing key {path}: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise EdgeloopError(f"{path} is not an ed25519 private key (make one with `edgeloop keys generate`)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise EdgeloopError(f"cannot load public key {path}: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise EdgeloopError(f"{path} is not an ed25519 public key")
    return key


def sign(model: Signed, key: Ed25519PrivateKey) -> Signed:
    """``model`` (a release manifest or a command) with ``key_id`` and ``signature`` set."""
    unsigned = model.model_copy(update={"key_id": key_id(key.public_key()), "signature": None})
    signature = key.sign(canonical_bytes(unsigned))
    # model_copy keeps the class; mypy only sees the bound's union through a TypeVar's Self
    return cast(Signed, unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()}))


def verify(model: ReleaseManifest | SignedCommand, keys: Iterable[Ed25519PublicKey]) -> str:
    """Check the signature against the trusted keys; return the key id that signed it."""
    what = _what(model)
    if not model.signature:
        raise SignatureError(f"{what} is not signed")
    try:
        signature = base64.b64decode(model.signature, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"{what}: signature is not valid base64") from e
    trusted = {key_id(k): k for k in keys}
    if not trusted:
        raise SignatureError(f"no trusted public key configured to verify a {what.split()[0]}")
    k = trusted.get(model.key_id or "")
    if k is None:
        raise SignatureError(f"{what} was signed by unknown key {model.key_id!r}")
    try:
        k.verify(signature, canonical_bytes(model))
    except InvalidSignature:
        raise SignatureError(f"{what}: signature does not match its contents") from None
    return key_id(k)
