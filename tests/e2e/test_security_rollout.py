"""The deployment as shipped: deploy/'s Mosquitto (TLS, mutual TLS, ACLs), `edgeloop serve` over mTLS on the
host-services listener (publisher + two ingest worker processes) with an API token and the devices' upload
secret, a real agent over mTLS connecting by IP (the broker certificate's IP SAN), and `edgeloop simulate`
devices with one certificate each. A deploy and a rollout complete; the agent uploads field images with its
own upload token."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.client import ApiClient
from host.fleet.pki import Pki
from host.fleet.release import ReleaseStore, golden_top1
from shared.modelmeta import read_meta
from tests.e2e.conftest import AgentProcess, ServeProcess, agent_toml, wait
from tests.fixtures import MakeRelease
from tests.helpers import REPO, agent_env, free_port, mosquitto_available
from tests.security.broker import SecureMosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.security]

TOKEN = "e2e-operator-token-0123456789abcdef"
SIMULATED = ["sim-000", "sim-001"]
FAST = {"warmup": 2, "iterations": 30, "throughput_batch": 16, "evaluate": True, "eval_limit": 200}


@pytest.fixture
def stack(
    tmp_path: Path, store: ReleaseStore, keys: tuple[Path, Path], golden_dir: Path
) -> Iterator[dict[str, object]]:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    pki = Pki(tmp_path / "pki")
    pki.init("127.0.0.1", dns=["localhost"])
    for device in ["dev-a", *SIMULATED]:
        pki.issue_device(device, "lab")
    (tmp_path / "broker").mkdir()
    broker = SecureMosquitto(pki, tmp_path / "broker")
    broker.start()
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    host_cert = pki.services / "edgeloop-host.crt"
    store.root.mkdir(parents=True, exist_ok=True)
    tls = ["--broker-ca", str(pki.ca_cert), "--broker-cert", str(host_cert),
           "--broker-key", str(host_cert.with_suffix(".key"))]  # fmt: skip
    serve = ServeProcess(tmp_path, broker.url("services"), store.root, free_port(), extra=[
        *tls, "--ingest-workers", "2", "--api-token-file", str(token_file),
        "--upload-secret-file", str(pki.upload_secret),
    ], command_key=keys[0])  # fmt: skip
    serve.start()
    bundle = pki.devices / "dev-a"
    agent_tls = (f'upload_token_file = "{bundle / "upload.token"}"\n[broker.tls]\nca_file = "{bundle / "ca.crt"}"\n'
           f'cert_file = "{bundle / "device.crt"}"\nkey_file = "{bundle / "device.key"}"\n')  # fmt: skip
    (tmp_path / "dev-a").mkdir()
    cfg = agent_toml(tmp_path / "dev-a" / "agent.toml", "dev-a", broker.url("device"), tmp_path / "dev-a" / "state",
                     keys[1], golden_dir, "lab", agent_tls)  # fmt: skip
    agent = AgentProcess(cfg, tmp_path / "dev-a" / "agent.log")
    agent.start()
    sim_log = (tmp_path / "simulate.log").open("wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "simulate", "--devices", str(len(SIMULATED)), "--fleet", "lab",
         "--prefix", "sim", "--broker", broker.url("device"), "--broker-ca", str(pki.ca_cert),
         "--device-certs", str(pki.root)],
        cwd=REPO, env=agent_env(), stdout=sim_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield {"pki": pki, "broker": broker, "serve": serve, "agent": agent, "token_file": token_file}
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        agent.kill()
        serve.stop()
        broker.stop()


def test_host_over_mtls_and_devices_complete_a_deploy_and_a_rollout(
    stack: dict[str, object], zoo_onnx: Path, make_release: MakeRelease, tmp_path: Path
) -> None:
    serve, broker, agent = stack["serve"], stack["broker"], stack["agent"]
    assert isinstance(serve, ServeProcess) and isinstance(broker, SecureMosquitto) and isinstance(agent, AgentProcess)
    api = ApiClient(serve.url, token=TOKEN)
    everyone = {"dev-a", *SIMULATED}
    wait(lambda: {d["device_id"] for d in api.get("/api/v1/fleet") if d["state"] == "online"} == everyone, 90,
         f"{everyone} online over mTLS\n{agent.text()[-2000:]}")  # fmt: skip
    m = make_release(zoo_onnx, "1.0.0", source_top1=golden_top1(zoo_onnx, read_meta(zoo_onnx)))
    cfg = {"waves": ["1", "100%"], "max_accuracy_drop": 1.0, "wave_timeout_s": 180, "bench": FAST}
    rid = api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg})["id"]
    done_states = ("completed", "rolled_back", "aborted")
    r = wait(lambda: (x := api.get(f"/api/v1/rollouts/{rid}"))["state"] in done_states and x, 300, "rollout")
    assert r["state"] == "completed", r["reason"]
    assert {d["device_id"] for d in r["devices"] if d["state"] == "passed"} == everyone
    wait(lambda: {d["release"] for d in api.get("/api/v1/fleet")} == {"r20@1.0.0"}, 30, "every device on r20@1.0.0")
    health = api.get("/api/v1/health")
    assert len(health["ingest"]) == 2 and sum(i["written"] for i in health["ingest"]) >= 2 * len(everyone)
    log = broker.log()
    assert "as dev-a (p5, c0, k30, u'dev-a')" in log  # the agent's client id is its certificate's CN
    for worker in ("edgeloop-ingest-0", "edgeloop-ingest-1", f"edgeloop-host-{health['replica']['id']}"):
        assert f"as {worker} (p5" in log and "u'edgeloop-host'" in log, worker
    # the agent uploads field images with its own upload token (serve checks it against lab/dev-a)
    out = tmp_path / "field"
    token_file = stack["token_file"]
    done = subprocess.run(
        [sys.executable, "-m", "host.cli", "fleet", "sample", "dev-a", "--n", "2", "--out", str(out), "--json",
         "--server", serve.url, "--token-file", str(token_file), "--timeout", "90"],
        cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + agent.text()[-2000:]
    assert json.loads(done.stdout)["received"] == 2 and len(list(out.iterdir())) == 2
