from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore
from host.fleet.server import HostServer, ServeConfig
from shared.protocol import ReleaseManifest
from tests.fixtures import MakeRelease
from tests.helpers import free_port


@pytest.fixture
def server(
    make_release: MakeRelease, zoo_onnx: Path, store: ReleaseStore, keys: tuple[Path, Path], tmp_path: Path
) -> Iterator[tuple[HostServer, ReleaseManifest]]:
    """`edgeloop serve` in this process, with the embedded broker, and one release."""
    m = make_release(zoo_onnx, "1.0.0")
    cfg = ServeConfig(
        releases=store.root,
        store_url=str(tmp_path / "h.sqlite"),
        port=free_port(),
        embedded_broker=True,
        embedded_broker_port=free_port(),
        command_key=keys[0],
    )
    srv = HostServer(cfg)
    srv.start()
    yield srv, m
    srv.stop()
