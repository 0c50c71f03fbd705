"""A serving fleet for end-to-end tests: `edgeloop serve`, one real agent with `[inference]` (and a
reservoir) on a real Mosquitto, a release with a drift reference rolled out to it, and a loadgen."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore, golden_top1
from shared import datasets, imaging
from shared.modelmeta import read_meta
from tests.e2e.conftest import AgentProcess, ServeProcess, agent_toml, wait
from tests.fixtures import MakeRelease
from tests.helpers import REPO, Mosquitto, agent_env, free_port

DRIFT_WINDOW = 200  # the golden set: clean traffic is then exactly the images the reference was taken on

BENCH = {"warmup": 2, "iterations": 20, "throughput_batch": 16, "throughput_rounds": 1, "eval_limit": 50}


def inference_toml(port: int, reservoir: Path) -> str:
    return (
        f'[inference]\nlisten = "127.0.0.1:{port}"\ntelemetry_interval_s = 1\nmax_batch = 16\n'
        f"[inference.drift]\nwindow = {DRIFT_WINDOW}\nmin_images = 100\n"
        f'[inference.reservoir]\ncapacity = 40\nmax_mb = 8\ndirectory = "{reservoir}"\n'
    )


@dataclass
class ServingFleet:
    serve: ServeProcess
    api: ApiClient
    agent: AgentProcess
    inference_url: str
    release: str

    def loadgen(self, data: Path, *how: str) -> dict[str, Any]:
        """`edgeloop-agent loadgen --json` against the agent's inference API."""
        done = subprocess.run(
            [sys.executable, "-m", "device.cli", "loadgen", "--url", self.inference_url, "--data", str(data),
             "--concurrency", "4", "--json", *how],
            cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def device(self, device: str = "dev-1") -> dict[str, Any]:
        found: dict[str, Any] = next(d for d in self.api.get("/api/v1/fleet") if d["device_id"] == device)
        return found

    def edgeloop(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "host.cli", *args, "--server", self.serve.url],
            cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def serving_fleet(
    mosquitto: Mosquitto,
    store: ReleaseStore,
    make_release: MakeRelease,
    zoo_onnx: Path,
    keys: tuple[Path, Path],
    golden_dir: Path,
    tmp_path: Path,
) -> Iterator[ServingFleet]:
    store.root.mkdir(parents=True, exist_ok=True)
    serve = ServeProcess(tmp_path, mosquitto.url, store.root, free_port(), command_key=keys[0])
    serve.start()
    d = tmp_path / "dev-1"
    d.mkdir()
    port = free_port()
    extra = inference_toml(port, d / "reservoir")
    cfg = agent_toml(d / "agent.toml", "dev-1", mosquitto.url, d / "state", keys[1], golden_dir, extra=extra)
    agent = AgentProcess(cfg, d / "agent.log")
    agent.start()
    api = ApiClient(serve.url)
    try:
        wait(lambda: any(x["state"] == "online" for x in api.get("/api/v1/fleet")), 90, "the agent online")
        m = make_release(zoo_onnx, "1.0.0", source_top1=golden_top1(zoo_onnx, read_meta(zoo_onnx)))
        assert m.model.reference is not None  # release create measured it
        cfg_ = {"waves": ["100%"], "max_accuracy_drop": 1.0, "bench": BENCH}
        rid = api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg_})["id"]
        wait(lambda: api.get(f"/api/v1/rollouts/{rid}")["state"] == "completed", 300, "rollout")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: _ready(url), 60, "the inference API ready")
        yield ServingFleet(serve, api, agent, url, str(m.ref))
    finally:
        agent.kill()
        serve.stop()


def shifted_copy(src: Path, out: Path, preset: str, seed: int = 0) -> Path:
    """PNG copies of a labelled folder as the field would see them (``host.factory.field.shift``)."""
    from host.factory.field.shift import shift_images

    samples = datasets.list_samples(src)
    images = shift_images(datasets.decode_all(samples, size=32), preset, seed)
    cv2 = imaging.opencv()
    for i, (s, img) in enumerate(zip(samples, images, strict=True)):
        dest = out / s.class_name / f"{i:04d}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(dest), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return out
