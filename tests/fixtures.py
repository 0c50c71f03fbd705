"""Release and key fixtures shared by device, host and e2e tests (registered in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore, create_release
from shared import signing
from shared.protocol import ReleaseManifest
from tests.helpers import range_server


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    signing.generate_keypair(d / "release.key", d / "release.pub")
    return d / "release.key", d / "release.pub"


@pytest.fixture(scope="session")
def random_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet-20 (about 10% top-1): fails any self-test."""
    import torch

    from host.factory import checkpoint, models
    from host.factory.export import export_command
    from shared.datasets import CIFAR10_CLASSES
    from shared.imaging import Preprocessing

    d = tmp_path_factory.mktemp("random")
    torch.manual_seed(0)
    ck = checkpoint.from_model(models.build("resnet20"), "resnet20", CIFAR10_CLASSES, Preprocessing())
    checkpoint.save(ck, d / "random.pt")
    export_command(d / "random.pt", d / "random.onnx")
    return d / "random.onnx"


@pytest.fixture
def store(tmp_path: Path) -> ReleaseStore:
    return ReleaseStore(tmp_path / "store")


@pytest.fixture
def served(store: ReleaseStore) -> Iterator[str]:
    store.root.mkdir(parents=True, exist_ok=True)
    with range_server(store.root) as (url, _):
        yield url


MakeRelease = Callable[..., ReleaseManifest]


@pytest.fixture
def make_release(store: ReleaseStore, keys: tuple[Path, Path], tmp_path: Path) -> MakeRelease:
    def make(
        onnx: Path, version: str = "1.0.0", name: str = "r20", sign: bool = True, source_top1: float = 0.9
    ) -> ReleaseManifest:
        build = tmp_path / f"build-{name}-{version}"
        build.mkdir()
        shutil.copy(onnx, build / onnx.name)
        return create_release(build, name, version, store, sign_key=keys[0] if sign else None, source_top1=source_top1)

    return make


@pytest.fixture
def resign(keys: tuple[Path, Path]) -> Callable[[ReleaseManifest], ReleaseManifest]:
    def sign(m: ReleaseManifest) -> ReleaseManifest:
        return signing.sign(m, signing.load_private_key(keys[0]))

    return sign
