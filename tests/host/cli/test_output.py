"""`edgeloop --version`, and the `--json` output of the commands that gained it (issue 24)."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from host.cli import main
from host.fleet.release import ReleaseStore, create_release
from shared import signing
from shared.protocol import DriftReference, ReleaseManifest
from shared.version import version
from tests.helpers import REPO

ZOO = REPO / "host" / "zoo"


def _json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"edgeloop {version()}\n"


def test_keys_generate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--out-dir", str(tmp_path), "--name", "ops", "--json"]) == 0
    out = _json(capsys)
    assert out == {"private_key": str(tmp_path / "ops.key"), "public_key": str(tmp_path / "ops.pub"),
                   "key_id": out["key_id"]}  # fmt: skip
    assert signing.load_public_key(tmp_path / "ops.pub") is not None and out["key_id"]


def test_release_list_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    assert main(["release", "list", "--store", str(store), "--json"]) == 0
    assert _json(capsys) == []
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(ZOO / "resnet20.onnx", build / "resnet20.onnx")
    made = create_release(build, "r20", "1.0.0", ReleaseStore(store), source_top1=0.89)
    assert main(["release", "list", "--store", str(store), "--json"]) == 0
    listed = [ReleaseManifest.model_validate(m) for m in _json(capsys)]
    assert listed == [made]


def test_data_reference_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], golden_dir: Path) -> None:
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m-int8.onnx"
    shutil.copy(ZOO / "resnet20.onnx", fp32)
    shutil.copy(ZOO / "resnet20-int8.onnx", int8)
    argv = ["data", "reference", str(fp32), "--data", str(golden_dir), "--limit", "50", "--into", str(int8), "--json"]
    assert main(argv) == 0
    out = _json(capsys)
    assert out["written"] == [str(fp32), str(int8)]
    assert DriftReference.model_validate(out["reference"]).n_images == 50


def _cifar_archive(path: Path) -> None:
    def add(tar: tarfile.TarFile, name: str, obj: object) -> None:
        data = pickle.dumps(obj, protocol=2)
        info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "batches.meta", {b"label_names": [b"apple", b"bee"]})
        for name, n in (("data_batch_1", 3), ("test_batch", 2)):
            pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            add(tar, name, {b"data": pixels, b"labels": [i % 2 for i in range(n)]})


def test_data_import_cifar_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _cifar_archive(tmp_path / "cifar.tar.gz")
    assert main(["data", "import-cifar", str(tmp_path / "cifar.tar.gz"), "--out", str(tmp_path / "out"), "--json"]) == 0
    assert _json(capsys) == {"out": str(tmp_path / "out"), "train": 3, "test": 2}


def test_export_json(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(tiny_ckpt), "--out", str(out), "--parity-images", "20", "--json"]) == 0
    r = _json(capsys)
    assert (r["checkpoint"], r["out"]) == (str(tiny_ckpt), str(out)) and out.exists()
    assert r["parity"]["n_images"] == 20 and r["parity"]["top1_agreement"] == 1.0
    assert 0 <= r["parity"]["max_abs_diff"] < 1e-3


class _FakeApi:
    """What `edgeloop rollout` asks of `edgeloop serve`: a rollout that completes on the second look."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.looks = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.posted.append((path, body))
        state = "aborted" if path.endswith("/abort") else "running"
        return {"id": "ro-1", "state": state, "release_name": "r20", "release_version": "1.0.0", "fleet": "lab"}

    def get(self, path: str) -> dict[str, Any]:
        self.looks += 1
        state = "completed" if self.looks >= 2 else "running"
        return {"id": "ro-1", "state": state, "release_name": "r20", "release_version": "1.0.0", "fleet": "lab"}


def test_rollout_start_and_abort_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    api = _FakeApi()
    monkeypatch.setattr("host.cli.rollout.api_client", lambda args: api)
    monkeypatch.setattr("time.sleep", lambda s: None)
    assert main(["rollout", "start", "r20@1.0.0", "--fleet", "lab", "--json"]) == 0
    assert _json(capsys)["state"] == "running"  # as started: nothing else on stdout
    assert main(["rollout", "start", "r20@1.0.0", "--fleet", "lab", "--wait", "--json"]) == 0
    assert _json(capsys)["state"] == "completed"  # as it ended
    assert main(["rollout", "abort", "ro-1", "--json"]) == 0
    aborted = _json(capsys)
    assert (aborted["id"], aborted["state"]) == ("ro-1", "aborted")
    assert [p for p, _ in api.posted] == ["/api/v1/rollouts", "/api/v1/rollouts", "/api/v1/rollouts/ro-1/abort"]
