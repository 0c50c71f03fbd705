from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.device.conftest import keys, make_release, random_onnx, resign, served, store  # noqa: F401
from tests.helpers import REPO, Mosquitto, agent_env


class AgentProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config", str(self.config)],
                                     cwd=REPO, env=agent_env(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def agent_toml(path: Path, device_id: str, broker_url: str, state_dir: Path, pub: Path, eval_dir: Path,
               fleet: str = "lab", extra: str = "") -> Path:  # fmt: skip
    path.write_text(
        f'device_id = "{device_id}"\nfleet = "{fleet}"\nstate_dir = "{state_dir}"\neval_dir = "{eval_dir}"\n'
        f"eval_limit = 50\nstatus_interval_s = 2\ntrusted_keys = [{json.dumps(str(pub))}]\n{extra}\n"
        f'[broker]\nurl = "{broker_url}"\nreconnect_max_s = 2\n[runtime]\ntype = "onnxruntime"\nintra_op_threads = 1\n'
    )
    return path


StartAgent = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(mosquitto: Mosquitto, keys: tuple[Path, Path], golden_dir: Path, tmp_path: Path) -> Iterator[StartAgent]:  # noqa: F811
    agents: list[AgentProcess] = []

    def start(device_id: str = "dev-1", fleet: str = "lab") -> AgentProcess:
        d = tmp_path / device_id
        d.mkdir(exist_ok=True)
        cfg = agent_toml(d / "agent.toml", device_id, mosquitto.url, d / "state", keys[1], golden_dir, fleet)
        a = AgentProcess(cfg, d / "agent.log")
        a.start()
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.kill()
