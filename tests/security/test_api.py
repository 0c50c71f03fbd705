"""The REST API's credentials: the operator token on every write and sensitive read (every route, checked
by walking the app's routes), device upload tokens, what stays open, open mode's limits, the CLI and serve."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.client import ApiClient
from host.fleet.pki import Pki
from host.fleet.release import ReleaseStore
from host.fleet.server import HostServer, ServeConfig
from host.fleet.tokens import load_upload_secret, upload_token
from host.fleet.web.app import create_app
from shared import protocol as p
from shared.errors import EdgeloopError
from shared.protocol import ReleaseManifest
from tests.helpers import REPO, agent_env, free_port, wait_port
from tests.security.conftest import TOKEN

pytestmark = pytest.mark.security

# what needs no operator token, and why (deploy/SECURITY.md says the same)
OPEN = {
    ("GET", "/"): "the dashboard page; it asks for the token",
    ("GET", "/api/v1/health"): "liveness for probes: broker up, ingest counters",
    ("GET", "/artifacts/{filename}"): "devices fetch them: signed and content-addressed",
    ("GET", "/releases/{name}/{version}.json"): "devices fetch them: signed",
    ("POST", "/api/v1/upload"): "the device's own upload token instead",
}  # and, outside the schema, /api/openapi.json and its pages, /static
VALUES = {"fleet": "lab", "device": "dev-1", "rollout_id": "r1", "command_id": str(uuid.uuid4()), "name": "r20",
          "version": "1.0.0", "filename": "0" * 64 + ".onnx"}  # fmt: skip


def _req(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _routes(srv: HostServer) -> list[tuple[str, str]]:
    """Every (method, path) of the app, from its OpenAPI schema (FastAPI lists every route there)."""
    paths = create_app(srv).openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def test_every_route_but_the_open_ones_needs_the_operator_token(
    token_server: tuple[HostServer, ReleaseManifest],
) -> None:
    srv, _ = token_server
    base = srv.config.base_url.rstrip("/")
    routes = _routes(srv)
    guarded = [(m, r) for m, r in routes if (m, r) not in OPEN]
    assert ("POST", "/api/v1/rollouts") in guarded and ("GET", "/metrics") in guarded and len(guarded) >= 14
    for method, route in guarded:
        url = base + route.format(**VALUES)
        body = b"{}" if method == "POST" else None
        for headers, why in (({}, "needs a token"), (_bearer("wrong-token-0123456789abcdef"), "refused"),
                             ({"Authorization": f"Basic {TOKEN}"}, "needs a token")):  # fmt: skip
            status, got, answer = _req(url, body, {"Content-Type": "application/json", **headers}, method)
            assert status == 401, (method, route, headers, status)
            assert got["www-authenticate"].startswith("Bearer") and why in json.loads(answer)["detail"]
        status, _, _ = _req(url, body, _bearer(TOKEN), method)
        assert status != 401, (method, route)


def test_open_routes_answer_without_a_token(token_server: tuple[HostServer, ReleaseManifest]) -> None:
    srv, m = token_server
    base = srv.config.base_url
    health = json.loads(_req(base + "api/v1/health")[2])
    assert health["auth"] == "token"
    for path in ("", "static/app.js", m.artifacts[0].url, f"releases/{m.name}/{m.version}.json", "api/openapi.json"):
        assert _req(base + path)[0] == 200, path


def test_writes_work_with_the_token(token_server: tuple[HostServer, ReleaseManifest]) -> None:
    srv, m = token_server
    srv.store.upsert_status(p.DeviceStatus(device_id="dev-1", fleet="lab", state="online", runtime="onnxruntime"))
    api = ApiClient(srv.config.base_url, token=TOKEN)
    rollout = api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab"})
    aborted = api.post(f"/api/v1/rollouts/{rollout['id']}/abort", {"reason": "test"})
    assert aborted["state"] in ("rolling_back", "aborted")
    assert api.post("/api/v1/devices/lab/dev-1/samples", {"n_images": 1})["n_images"] == 1
    with pytest.raises(EdgeloopError, match=r"HTTP 401: .*needs a token.*\(no token given: --token-file\)"):
        ApiClient(srv.config.base_url).get("/api/v1/rollouts")


def test_uploads_take_only_the_devices_own_token(
    token_server: tuple[HostServer, ReleaseManifest], pki: Pki, golden_dir: Path
) -> None:
    srv, _ = token_server
    cid = str(uuid.uuid4())
    srv.samples.create("lab", "dev-a", cid, n_images=2)
    url = srv.config.base_url + f"api/v1/upload?command={cid}"
    img = next((golden_dir / "cat").iterdir()).read_bytes()
    as_a = {"X-Edgeloop-Device": "dev-a", "X-Edgeloop-Fleet": "lab"}
    own = (pki.devices / "dev-a" / "upload.token").read_text().strip()
    other = (pki.devices / "dev-b" / "upload.token").read_text().strip()
    secret = load_upload_secret(pki.upload_secret)
    assert _req(url, img, as_a, "POST")[0] == 401  # no token
    assert _req(url, img, {**as_a, "Authorization": f"Bearer {other}"}, "POST")[0] == 403  # dev-b's token as dev-a
    assert _req(url, img, {**as_a, "Authorization": f"Bearer {TOKEN}"}, "POST")[0] == 403  # the operator's
    same_name = upload_token(secret, "other", "dev-a")  # a dev-a of another fleet
    assert _req(url, img, {**as_a, "Authorization": f"Bearer {same_name}"}, "POST")[0] == 403
    status, _, body = _req(url, img, {**as_a, "Authorization": f"Bearer {own}"}, "POST")
    assert status == 201 and json.loads(body)["stored"].startswith(f"lab/dev-a/{cid}/")
    # dev-b, with its own good token, still only uploads into a request made for dev-b
    as_b = {"X-Edgeloop-Device": "dev-b", "X-Edgeloop-Fleet": "lab", "Authorization": f"Bearer {other}"}
    assert _req(url, img, as_b, "POST")[0] == 404
    assert srv.samples.files("lab", "dev-a", cid) == ["0000.jpg"]


@pytest.fixture
def open_server(store: ReleaseStore, tmp_path: Path) -> Iterator[HostServer]:
    store.root.mkdir(parents=True, exist_ok=True)
    cfg = ServeConfig(releases=store.root, store_url=str(tmp_path / "o.sqlite"), port=free_port(),
                      embedded_broker=True, embedded_broker_port=free_port())  # fmt: skip
    srv = HostServer(cfg)
    srv.start()
    yield srv
    srv.stop()


def test_open_mode_is_loopback_only_and_refuses_rebinding_and_cross_site_writes(open_server: HostServer) -> None:
    base = open_server.config.base_url
    assert json.loads(_req(base + "api/v1/health")[2])["auth"] == "open (loopback only)"
    assert _req(base + "api/v1/fleet")[0] == 200
    assert _req(base + "api/v1/fleet", headers={"Host": "localhost"})[0] == 200
    assert _req(base + "api/v1/fleet", headers={"Host": "attacker.example:8080"})[0] == 403  # DNS rebinding
    rollout = json.dumps({"release": "r20@9.9.9", "fleet": "lab"}).encode()
    json_headers = {"Content-Type": "application/json"}
    assert _req(base + "api/v1/rollouts", rollout, json_headers, "POST")[0] == 400  # through auth (no such release)
    host = base.split("//")[1].rstrip("/")
    assert _req(base + "api/v1/rollouts", rollout, {**json_headers, "Origin": f"http://{host}"}, "POST")[0] == 400
    for bad in ({"Origin": "http://attacker.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        assert _req(base + "api/v1/rollouts/r1/abort", b"", {**json_headers, **bad}, "POST")[0] == 403, bad
    cid = str(uuid.uuid4())
    open_server.samples.create("lab", "dev-1", cid, 1)
    upload = base + f"api/v1/upload?command={cid}"
    assert (
        _req(upload, b"x", {"X-Edgeloop-Device": "dev-1", "X-Edgeloop-Fleet": "lab", "Host": "evil"}, "POST")[0] == 403
    )


@pytest.mark.parametrize(
    ("host", "public_url"), [("0.0.0.0", None), ("192.168.1.10", None), ("127.0.0.1", "http://edgeloop.lan:8080/")]
)
def test_serve_needs_a_token_when_other_machines_can_reach_it(
    host: str, public_url: str | None, store: ReleaseStore, tmp_path: Path
) -> None:
    cfg = ServeConfig(releases=store.root, store_url=str(tmp_path / "x.sqlite"), host=host, public_url=public_url)
    with pytest.raises(EdgeloopError, match="needs a token"):
        HostServer(cfg)
    srv = HostServer(ServeConfig(releases=store.root, store_url=str(tmp_path / "y.sqlite"), host=host,
                                 public_url=public_url, api_token=TOKEN))  # fmt: skip
    assert srv.auth.mode == "token"
    srv.store.close()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**agent_env(), **(env or {})})  # fmt: skip


def test_serve_writes_a_new_token_file_and_the_cli_sends_it(store: ReleaseStore, tmp_path: Path) -> None:
    store.root.mkdir(parents=True, exist_ok=True)
    token_file, port = tmp_path / "secrets" / "api-token", free_port()
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "serve", "--releases", str(store.root),
         "--store", str(tmp_path / "s.sqlite"), "--port", str(port), "--embedded-broker",
         "--embedded-broker-port", str(free_port()), "--api-token-file", str(token_file)],
        cwd=REPO, env=agent_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_port(port, timeout=60)
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        server = f"http://127.0.0.1:{port}"
        denied = _cli("fleet", "status", "--server", server)
        assert denied.returncode == 2 and "HTTP 401" in denied.stderr and "--token-file" in denied.stderr
        assert _cli("fleet", "status", "--json", "--server", server, "--token-file", str(token_file)).returncode == 0
        by_env = _cli("rollout", "status", "--json", "--server", server, env={"EDGELOOP_API_TOKEN": token})
        assert by_env.returncode == 0 and json.loads(by_env.stdout) == []
        by_env_file = _cli("fleet", "status", "--server", server, env={"EDGELOOP_API_TOKEN_FILE": str(token_file)})
        assert by_env_file.returncode == 0, by_env_file.stderr
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    text = log.read_text()
    assert f"new token written to {token_file}" in text and token not in text  # the token is never printed
    refused = _cli("serve", "--host", "0.0.0.0", "--releases", str(store.root), "--store", str(tmp_path / "t.sqlite"))
    assert refused.returncode == 2 and "needs a token" in refused.stderr


def test_serve_over_https_with_the_pki_broker_certificate(
    store: ReleaseStore, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.root.mkdir(parents=True, exist_ok=True)
    cfg = ServeConfig(releases=store.root, store_url=str(tmp_path / "h.sqlite"), port=free_port(),
                      embedded_broker=True, embedded_broker_port=free_port(), api_token=TOKEN,
                      http_cert=pki.broker_cert, http_key=pki.broker_key)  # fmt: skip
    assert cfg.base_url.startswith("https://127.0.0.1:")
    srv = HostServer(cfg)
    srv.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_cert))  # the CLI and the agent trust the fleet CA this way
        assert ApiClient(cfg.base_url, token=TOKEN).get("/api/v1/fleet") == []
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(EdgeloopError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            ApiClient(cfg.base_url, token=TOKEN).get("/api/v1/fleet")
    finally:
        srv.stop()
    assert os.environ.get("SSL_CERT_FILE") is None
