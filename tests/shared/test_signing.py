from __future__ import annotations

from pathlib import Path

import pytest

from shared import signing
from shared.errors import EdgeloopError
from shared.protocol import ReleaseManifest
from tests.shared.factories import manifest

pytestmark = pytest.mark.security


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "k.key", tmp_path / "k.pub"
    signing.generate_keypair(priv, pub)
    return priv, pub


def test_sign_and_verify_round_trip_through_json(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    signed = signing.sign(manifest(), signing.load_private_key(priv))
    back = ReleaseManifest.model_validate_json(signed.model_dump_json())
    assert signing.verify(back, [signing.load_public_key(pub)]) == signed.key_id


def test_tampering_is_detected(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    signed = signing.sign(manifest(), signing.load_private_key(priv))
    art = signed.artifacts[0].model_copy(update={"sha256": "b" * 64})
    tampered = signed.model_copy(update={"artifacts": (art,)})
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(tampered, [signing.load_public_key(pub)])


def test_unknown_key_unsigned_and_garbage_signatures(keys: tuple[Path, Path], tmp_path: Path) -> None:
    priv, pub = keys
    other_priv, other_pub = tmp_path / "o.key", tmp_path / "o.pub"
    signing.generate_keypair(other_priv, other_pub)
    signed = signing.sign(manifest(), signing.load_private_key(priv))
    with pytest.raises(signing.SignatureError, match="unknown key"):
        signing.verify(signed, [signing.load_public_key(other_pub)])
    with pytest.raises(signing.SignatureError, match="not signed"):
        signing.verify(manifest(), [signing.load_public_key(pub)])
    with pytest.raises(signing.SignatureError, match="base64"):
        signing.verify(signed.model_copy(update={"signature": "!!!"}), [signing.load_public_key(pub)])
    forged_id = signed.model_copy(update={"key_id": signing.key_id(signing.load_public_key(other_pub))})
    with pytest.raises(signing.SignatureError):
        signing.verify(forged_id, [signing.load_public_key(pub), signing.load_public_key(other_pub)])


def test_private_key_is_private_and_never_overwritten(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    assert priv.stat().st_mode & 0o077 == 0
    with pytest.raises(EdgeloopError, match="refusing"):
        signing.generate_keypair(priv, pub)


def test_loading_wrong_files_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(EdgeloopError):
        signing.load_public_key(bad)
    with pytest.raises(EdgeloopError):
        signing.load_private_key(tmp_path / "missing.key")
