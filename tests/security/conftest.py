from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.pki import Pki
from host.fleet.release import ReleaseStore
from host.fleet.server import HostServer, ServeConfig
from host.fleet.tokens import load_upload_secret
from shared.protocol import ReleaseManifest
from tests.fixtures import MakeRelease
from tests.helpers import free_port, mosquitto_available
from tests.security.broker import SecureMosquitto

TOKEN = "test-operator-token-0123456789abcdef"
# lab: dev-a and dev-b; another fleet with a device of the same name as one in lab
DEVICES = {"dev-a": "lab", "dev-b": "lab", "dev-c": "other"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """`edgeloop certs init` for 127.0.0.1 (IP SAN) and localhost (DNS SAN), and three devices."""
    p = Pki(tmp_path_factory.mktemp("pki") / "pki")
    p.init("127.0.0.1", dns=["localhost"])
    for device, fleet in DEVICES.items():
        p.issue_device(device, fleet)
    return p


@pytest.fixture
def secure_broker(pki: Pki, tmp_path: Path) -> Iterator[SecureMosquitto]:
    """Mosquitto with deploy/mosquitto/mosquitto.conf (TLS, mTLS, ACLs), on loopback ports."""
    if not mosquitto_available():
        if os.environ.get("CI") or os.environ.get("EDGELOOP_REQUIRE_BROKER"):
            pytest.fail("mosquitto is not installed (CI installs it: apt-get install -y mosquitto)")
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    workdir = tmp_path / "secure-broker"
    workdir.mkdir()
    broker = SecureMosquitto(pki, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def token_server(
    make_release: MakeRelease, zoo_onnx: Path, store: ReleaseStore, pki: Pki, tmp_path: Path
) -> Iterator[tuple[HostServer, ReleaseManifest]]:
    """`edgeloop serve` in this process with an API token and the PKI's upload secret (embedded broker)."""
    m = make_release(zoo_onnx, "1.0.0")
    cfg = ServeConfig(
        releases=store.root,
        store_url=str(tmp_path / "h.sqlite"),
        port=free_port(),
        embedded_broker=True,
        embedded_broker_port=free_port(),
        api_token=TOKEN,
        upload_secret=load_upload_secret(pki.upload_secret),
    )
    srv = HostServer(cfg)
    srv.start()
    yield srv, m
    srv.stop()
