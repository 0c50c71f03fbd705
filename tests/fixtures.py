"""Release and key fixtures shared by device, host and e2e tests (registered in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
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
def random_onnx(tmp_path_factory: pytest.TempPathFactory, zoo_onnx: Path) -> Path:
    """An untrained ResNet-20 (about 10% top-1): fails any self-test. The zoo model with its weights redrawn
    (He-normal, seeded) and its biases zeroed, so it keeps the metadata and needs no torch (the device-only
    test runs on JetPack's Pythons have none)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(zoo_onnx))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype != np.float32:
            continue  # shapes of Reshape
        fan_in = int(np.prod(w.shape[1:])) if w.ndim > 1 else 0
        new = rng.normal(0, np.sqrt(2 / fan_in), w.shape) if fan_in else np.zeros(w.shape)
        init.CopyFrom(numpy_helper.from_array(new.astype(np.float32), init.name))
    out = tmp_path_factory.mktemp("random") / "random.onnx"
    onnx.save(model, str(out))
    return out


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
