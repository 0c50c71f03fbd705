"""`edgeloop serve` in-process (embedded broker): artifacts, REST API, uploads, /metrics, CLI client."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from host.fleet.client import ApiClient
from host.fleet.server import HostServer
from host.fleet.web.upload import MAX_UPLOAD
from shared import protocol as p
from shared.protocol import ReleaseManifest
from tests.helpers import REPO
from tests.host.fleet.factories import drift_stats, telemetry_report


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
    cid = str(uuid.uuid4())
    srv.samples.create("lab", "dev-1", cid, n_images=3)  # what POST .../samples does before it sends the command
    url = srv.config.base_url + f"api/v1/upload?command={cid}"
    img = next((golden_dir / "cat").iterdir()).read_bytes()
    ok = {"X-Edgeloop-Device": "dev-1", "X-Edgeloop-Fleet": "lab", "X-Edgeloop-Filename": "../../evil.sh"}
    status, _, body = _req(url, img, ok, "POST")
    assert status == 201
    stored = srv.uploads / json.loads(body)["stored"]
    assert stored.read_bytes() == img and stored.parent == srv.uploads / "lab" / "dev-1" / cid
    assert stored.name == "0000.jpg"  # our name, never the client's
    assert _req(url, b"#!/bin/sh\nrm -rf /", ok, "POST")[0] == 415
    assert _req(url, img, {**ok, "X-Edgeloop-Device": "../x"}, "POST")[0] == 400
    assert _oversized_upload_status(srv.config.port, ok, cid) == 413
    assert _chunked_upload_status(srv.config.port, ok, MAX_UPLOAD + 100, cid=cid) == 413  # no Content-Length to trust
    assert _chunked_upload_status(srv.config.port, ok, 0, img, cid=cid) == 201
    # only into a request this host made, for this device, and no more images than it asked for
    plain = srv.config.base_url + "api/v1/upload"
    assert _req(plain, img, ok, "POST")[0] == 403
    assert _req(plain, img, {**ok, "X-Edgeloop-Command": cid}, "POST")[0] == 201  # the header works too
    assert _req(url, img, ok, "POST")[0] == 409  # the fourth of three
    assert _req(url, img, {**ok, "X-Edgeloop-Device": "dev-2"}, "POST")[0] == 404
    assert _req(f"{plain}?command={uuid.uuid4()}", img, ok, "POST")[0] == 404
    assert _req(f"{plain}?command=..%2F..%2Fetc", img, ok, "POST")[0] == 400
    assert srv.samples.files("lab", "dev-1", cid) == ["0000.jpg", "0001.jpg", "0002.jpg"]


def _chunked_upload_status(port: int, headers: dict[str, str], size: int, data: bytes = b"", cid: str = "") -> int:
    """POST a chunked body (no Content-Length). An oversized one is sent without its terminating chunk:
    the server must answer once it has read past the limit, and the client writes nothing after that
    which could race the server's 413 and close."""
    import http.client

    body = data or b"\xff" * size
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", f"/api/v1/upload?command={cid}")
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


def _oversized_upload_status(port: int, headers: dict[str, str], cid: str) -> int:
    """Announce a 2 MiB body and send none of it: the server must refuse on Content-Length alone.

    (Sending the body races the server's early 413 and close: the client may hit a broken pipe.)
    """
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", f"/api/v1/upload?command={cid}")
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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_fleet_status_cli_and_metrics(server: tuple[HostServer, ReleaseManifest]) -> None:
    srv, m = server
    for device in ("dev-1", "dev-2", "dev-3"):
        srv.store.upsert_status(
            p.DeviceStatus(device_id=device, fleet="lab", state="online", release=m.ref, runtime="onnxruntime")
        )
    srv.store.add_reports(
        [
            ("lab", telemetry_report("dev-1", release=m.ref, drift=drift_stats(3.1))),
            ("lab", telemetry_report("dev-2", release=m.ref, drift=drift_stats(0.2, label_drift=23.8))),
        ]
    )
    done = _cli("fleet", "status", "--json", "--server", srv.config.base_url)
    assert done.returncode == 0, done.stderr
    devs = {d["device_id"]: d for d in json.loads(done.stdout)}
    dev = devs["dev-1"]
    assert dev["state"] == "online" and dev["release"] == str(m.ref)
    for key in ("p50_ms", "p99_ms", "top1", "runtime", "gpu", "served_p50_ms", "served_p99_ms", "drift"):
        assert key in dev
    assert dev["drift"]["drifted"] is True and dev["drift"]["score"] == 3.1 and dev["served_p99_ms"] == 9.0
    assert devs["dev-2"]["drift"]["drifted"] is False and devs["dev-3"]["drift"] is None
    table = _cli("fleet", "status", "--server", srv.config.base_url)
    assert table.returncode == 0, table.stderr
    lines = {line.split("│")[2].strip(): line for line in table.stdout.splitlines() if "dev-" in line}
    assert "DRIFT 3.10" in lines["dev-1"] and "ok 0.20" in lines["dev-2"]
    cells = {k: [c.strip() for c in line.split("│")] for k, line in lines.items()}
    assert cells["dev-2"][9:11] == ["ok 0.20", "23.80"] and cells["dev-1"][9:11] == ["DRIFT 3.10", "0.40"]
    assert cells["dev-3"][9:11] == ["-", "-"]  # input drift, then label drift (which never flags)
    assert devs["dev-2"]["drift"]["label_drift"] == 23.8 and devs["dev-2"]["drift"]["input_drift"] == 0.2
    assert "DRIFT" not in lines["dev-3"] and " ok " not in lines["dev-3"]
    status, _, body = _req(srv.config.base_url + "metrics")
    assert status == 200 and b'edgeloop_device_online{device="dev-1",fleet="lab"} 1.0' in body
    assert b'edgeloop_device_drifted{device="dev-1",fleet="lab",release="r20@1.0.0"} 1.0' in body
    assert b'edgeloop_served_latency_ms{device="dev-2",fleet="lab",quantile="0.99"} 9.0' in body
    down = _cli("fleet", "status", "--server", "http://127.0.0.1:9")
    assert down.returncode == 2 and "cannot reach" in down.stderr


def test_live_telemetry_endpoint(server: tuple[HostServer, ReleaseManifest]) -> None:
    srv, _ = server
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    srv.store.add_reports(
        [("lab", telemetry_report(f"dev-{i % 2}", sent_at=t0 + timedelta(seconds=i))) for i in range(6)]
        + [("other", telemetry_report("dev-9", sent_at=t0))]
    )
    api = ApiClient(srv.config.base_url)
    everything = api.get("/api/v1/telemetry/live")
    assert len(everything) == 7 and [r["sent_at"] for r in everything] == sorted(r["sent_at"] for r in everything)
    lab = api.get("/api/v1/telemetry/live?fleet=lab&device=dev-1&limit=2")
    assert [(r["device_id"], r["sent_at"]) for r in lab] == [
        ("dev-1", (t0 + timedelta(seconds=3)).isoformat()),
        ("dev-1", (t0 + timedelta(seconds=5)).isoformat()),
    ]
    assert lab[0]["p99_ms"] == 9.0 and lab[0]["drift"]["score"] == 0.2 and lab[0]["errors"] == {"not_an_image": 2}
    assert api.get("/api/v1/telemetry/live?limit=0") == everything[-1:]  # limits are clamped to 1..20000
