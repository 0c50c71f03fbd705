from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from device.fetch import FetchError, fetch, resolve_url
from tests.helpers import range_server

pytestmark = pytest.mark.security


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, bytes, str]:
    root = tmp_path / "srv"
    root.mkdir()
    data = bytes(range(256)) * 400
    (root / "a.onnx").write_bytes(data)
    return root, data, hashlib.sha256(data).hexdigest()


def test_download_and_verify(served: tuple[Path, bytes, str], tmp_path: Path) -> None:
    root, data, digest = served
    with range_server(root) as (url, seen):
        dest = fetch(url + "a.onnx", tmp_path / "out" / "a.onnx", digest, len(data), 1 << 20)
        assert dest.read_bytes() == data
        fetch(url + "a.onnx", dest, digest, len(data), 1 << 20)  # already there: no second GET
    assert len(seen) == 1


def test_resume_uses_a_range_request(served: tuple[Path, bytes, str], tmp_path: Path) -> None:
    root, data, digest = served
    dest = tmp_path / "a.onnx"
    dest.with_name("a.onnx.part").write_bytes(data[:1000])
    with range_server(root) as (url, seen):
        fetch(url + "a.onnx", dest, digest, len(data), 1 << 20)
    assert seen == ["bytes=1000-"]
    assert dest.read_bytes() == data


def test_sha256_mismatch_leaves_nothing(served: tuple[Path, bytes, str], tmp_path: Path) -> None:
    root, data, _ = served
    dest = tmp_path / "a.onnx"
    with range_server(root) as (url, _), pytest.raises(FetchError) as e:
        fetch(url + "a.onnx", dest, "0" * 64, len(data), 1 << 20)
    assert e.value.code == "artifact_sha256_mismatch"
    assert not dest.exists() and not dest.with_name("a.onnx.part").exists()


def test_truncated_download(served: tuple[Path, bytes, str], tmp_path: Path) -> None:
    root, data, digest = served
    with range_server(root) as (url, _), pytest.raises(FetchError) as e:
        fetch(url + "a.onnx", tmp_path / "a.onnx", digest, len(data) + 10, 1 << 20)
    assert e.value.code == "artifact_truncated"
    assert not (tmp_path / "a.onnx").exists()


def test_size_limits(served: tuple[Path, bytes, str], tmp_path: Path) -> None:
    root, data, digest = served
    with pytest.raises(FetchError) as e:
        fetch("http://127.0.0.1:9/a.onnx", tmp_path / "a.onnx", digest, len(data), 100)
    assert e.value.code == "artifact_too_large"
    with range_server(root) as (url, _), pytest.raises(FetchError) as e:
        fetch(url + "a.onnx", tmp_path / "b.onnx", digest, 1000, 1 << 20)  # server sends more than announced
    assert e.value.code == "artifact_too_large"


def test_http_errors_and_unreachable(tmp_path: Path, served: tuple[Path, bytes, str]) -> None:
    root, data, digest = served
    with range_server(root) as (url, _), pytest.raises(FetchError) as e:
        fetch(url + "missing.onnx", tmp_path / "m.onnx", digest, len(data), 1 << 20)
    assert e.value.code == "artifact_http_error"
    with pytest.raises(FetchError) as e:
        fetch("http://127.0.0.1:9/a.onnx", tmp_path / "u.onnx", digest, len(data), 1 << 20, timeout=2)
    assert e.value.code == "artifact_unreachable"


def test_resolve_url() -> None:
    assert resolve_url("artifacts/x.onnx", "http://h:1/") == "http://h:1/artifacts/x.onnx"
    assert resolve_url("https://cdn/x.onnx", None) == "https://cdn/x.onnx"
    with pytest.raises(FetchError):
        resolve_url("artifacts/x.onnx", None)
    with pytest.raises(FetchError):
        resolve_url("x.onnx", "file:///etc/")
