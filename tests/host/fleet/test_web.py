"""`edgeloop serve` in-process (embedded broker): artifacts, REST API, uploads, /metrics, CLI client."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore
from host.fleet.server import HostServer, ServeConfig
from host.fleet.web.upload import MAX_UPLOAD
from shared import protocol as p
from shared.protocol import ReleaseManifest
from tests.fixtures import MakeRelease
from tests.helpers import REPO, free_port


@pytest.fixture
def server(
    make_release: MakeRelease, zoo_onnx: Path, store: ReleaseStore, tmp_path: Path
) -> Iterator[tuple[HostServer, ReleaseManifest]]:
    m = make_release(zoo_onnx, "1.0.0")
    cfg = ServeConfig(
        releases=store.root,
        store_url=str(tmp_path / "h.sqlite"),
        port=free_port(),
        embedded_broker=True,
        embedded_broker_port=free_port(),
    )
    srv = HostServer(cfg)
    srv.start()
    yield srv, m
    srv.stop()


def _req(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_artifacts_support_range_requests(server: tuple[HostServer, ReleaseManifest], zoo_onnx: Path) -> None:
    srv, m = server
    base = srv.config.base_url
    art = m.artifacts[0]
    status, _, body = _req(base + art.url)
    assert status == 200 and body == zoo_onnx.read_bytes()
    status, headers, body = _req(base + art.url, headers={"Range": "bytes=100-199"})
    assert status == 206 and body == zoo_onnx.read_bytes()[100:200]
    assert headers["content-range"].startswith("bytes 100-199/")
    status, _, body = _req(base + f"releases/{m.name}/{m.version}.json")
    assert status == 200 and ReleaseManifest.model_validate_json(body) == m


@pytest.mark.security
@pytest.mark.parametrize(
    "path",
    [
        "artifacts/..%2F..%2Fetc%2Fpasswd",
        "artifacts/x.onnx",
        "artifacts/" + "0" * 64 + ".onnx",
        "releases/..%2F..%2Fkeys/x.json",
    ],
)
def test_no_path_escapes(server: tuple[HostServer, ReleaseManifest], path: str) -> None:
    status, _, _ = _req(server[0].config.base_url + path)
    assert status == 404


@pytest.mark.security
def test_uploads_are_checked(server: tuple[HostServer, ReleaseManifest], golden_dir: Path, tmp_path: Path) -> None:
    srv, _ = server
    url = srv.config.base_url + "api/v1/upload"
    img = next((golden_dir / "cat").iterdir()).read_bytes()
    ok = {"X-Edgeloop-Device": "dev-1", "X-Edgeloop-Fleet": "lab", "X-Edgeloop-Filename": "../../evil.sh"}
    status, _, body = _req(url, img, ok, "POST")
    assert status == 201
    stored = srv.uploads / json.loads(body)["stored"]
    assert stored.read_bytes() == img and stored.parent == srv.uploads / "lab" / "dev-1" and ".." not in stored.name
    assert _req(url, b"#!/bin/sh\nrm -rf /", ok, "POST")[0] == 415
    assert _req(url, img, {**ok, "X-Edgeloop-Device": "../x"}, "POST")[0] == 400
    assert _oversized_upload_status(srv.config.port, ok) == 413
    assert _chunked_upload_status(srv.config.port, ok, MAX_UPLOAD + 100) == 413  # no Content-Length to trust
    assert _chunked_upload_status(srv.config.port, ok, 0, img) == 201


def _chunked_upload_status(port: int, headers: dict[str, str], size: int, data: bytes = b"") -> int:
    """POST a chunked body (no Content-Length). An oversized one is sent without its terminating chunk:
    the server must answer once it has read past the limit, and the client writes nothing after that
    which could race the server's 413 and close."""
    import http.client

    body = data or b"\xff" * size
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/upload")
        for k, v in {**headers, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(body), 65536):
            part = body[i : i + 65536]
            conn.send(b"%X\r\n%b\r\n" % (len(part), part))
        if len(body) <= MAX_UPLOAD:
            conn.send(b"0\r\n\r\n")
        return conn.getresponse().status
    finally:
        conn.close()


def _oversized_upload_status(port: int, headers: dict[str, str]) -> int:
    """Announce a 2 MiB body and send none of it: the server must refuse on Content-Length alone.

    (Sending the body races the server's early 413 and close: the client may hit a broken pipe.)
    """
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/upload")
        for k, v in {**headers, "Content-Length": str(2 << 20)}.items():
            conn.putheader(k, v)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_api_errors_are_clear(server: tuple[HostServer, ReleaseManifest]) -> None:
    srv, m = server
    url = srv.config.base_url + "api/v1/rollouts"
    status, _, body = _req(
        url, json.dumps({"release": "nope@1.0", "fleet": "lab"}).encode(), {"Content-Type": "application/json"}, "POST"
    )
    assert status == 400 and "nope" in json.loads(body)["error"]
    status, _, body = _req(
        url,
        json.dumps({"release": str(m.ref), "fleet": "empty"}).encode(),
        {"Content-Type": "application/json"},
        "POST",
    )
    assert status == 400 and "no known devices" in json.loads(body)["error"]
    status, _, _ = _req(
        url, json.dumps({"release": str(m.ref), "fleet": "a/b"}).encode(), {"Content-Type": "application/json"}, "POST"
    )
    assert status == 422


def test_fleet_status_cli_and_metrics(server: tuple[HostServer, ReleaseManifest]) -> None:
    srv, m = server
    srv.store.upsert_status(
        p.DeviceStatus(device_id="dev-1", fleet="lab", state="online", release=m.ref, runtime="onnxruntime")
    )
    done = subprocess.run(
        [sys.executable, "-m", "host.cli", "fleet", "status", "--json", "--server", srv.config.base_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (dev,) = json.loads(done.stdout)
    assert dev["device_id"] == "dev-1" and dev["state"] == "online" and dev["release"] == str(m.ref)
    for key in ("p50_ms", "p99_ms", "top1", "runtime", "gpu"):
        assert key in dev
    status, _, body = _req(srv.config.base_url + "metrics")
    assert status == 200 and b'edgeloop_device_online{device="dev-1",fleet="lab"} 1.0' in body
    down = subprocess.run(
        [sys.executable, "-m", "host.cli", "fleet", "status", "--server", "http://127.0.0.1:9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 2 and "cannot reach" in down.stderr
