from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore
from tests.helpers import REPO, Mosquitto, agent_env, free_port


class AgentProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "run", "--config", str(self.config)],
            cwd=REPO,
            env=agent_env(),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

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


def agent_toml(
    path: Path,
    device_id: str,
    broker_url: str,
    state_dir: Path,
    pub: Path,
    eval_dir: Path | None,
    fleet: str = "lab",
    extra: str = "",
    runtime: str = 'type = "onnxruntime"\nthreads = 1\n',
) -> Path:
    """``runtime``: the body of the ``[runtime]`` table (it may end with sub-tables, and comes last)."""
    evals = f'eval_dir = "{eval_dir}"\n' if eval_dir is not None else ""
    path.write_text(
        f'device_id = "{device_id}"\nfleet = "{fleet}"\nstate_dir = "{state_dir}"\n{evals}'
        f"eval_limit = 50\nstatus_interval_s = 2\ntrusted_keys = [{json.dumps(str(pub))}]\n{extra}\n"
        f'[broker]\nurl = "{broker_url}"\nreconnect_max_s = 2\n[runtime]\n{runtime}'
    )
    return path


StartAgent = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(
    mosquitto: Mosquitto, keys: tuple[Path, Path], golden_dir: Path, tmp_path: Path
) -> Iterator[StartAgent]:
    agents: list[AgentProcess] = []

    def start(
        device_id: str = "dev-1",
        fleet: str = "lab",
        extra: str = "",
        eval_dir: Path | bool | None = True,
        runtime: str | None = None,
    ) -> AgentProcess:
        """``extra``: more agent.toml (top-level keys, then tables such as ``[inference]``);
        ``eval_dir``: True for the golden images, None for no labelled set, or a folder;
        ``runtime``: the ``[runtime]`` table's body (default: ONNX Runtime, one thread)."""
        d = tmp_path / device_id
        d.mkdir(exist_ok=True)
        evals = golden_dir if eval_dir is True else (eval_dir or None)
        rt = {"runtime": runtime} if runtime is not None else {}
        cfg = agent_toml(d / "agent.toml", device_id, mosquitto.url, d / "state", keys[1], evals, fleet, extra, **rt)
        a = AgentProcess(cfg, d / "agent.log")
        a.start()
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.kill()


class ServeProcess:
    """`edgeloop serve` as a real process (killable, restartable on the same store)."""

    def __init__(
        self,
        workdir: Path,
        broker_url: str,
        releases: Path,
        port: int,
        extra: list[str] | None = None,
        command_key: Path | None = None,
    ) -> None:
        self.workdir, self.broker_url, self.releases, self.port = workdir, broker_url, releases, port
        self.extra = [*(extra or []), *(["--command-key", str(command_key)] if command_key else [])]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from tests.helpers import wait_port

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "host.cli",
                "serve",
                "--releases",
                str(self.releases),
                "--store",
                str(self.workdir / "host.sqlite"),
                "--port",
                str(self.port),
                "--broker",
                self.broker_url,
                *self.extra,
            ],
            cwd=REPO,
            env=agent_env(),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def api(self) -> object:
        from host.fleet.client import ApiClient

        return ApiClient(self.url)


DEVICES = ["dev-1", "dev-2", "dev-3"]


def wait(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    raise TimeoutError(what)


@pytest.fixture
def fleet(
    mosquitto: Mosquitto, start_agent: StartAgent, store: ReleaseStore, keys: tuple[Path, Path], tmp_path: Path
) -> Any:
    store.root.mkdir(parents=True, exist_ok=True)
    serve = ServeProcess(tmp_path, mosquitto.url, store.root, free_port(), command_key=keys[0])
    serve.start()
    agents = {d: start_agent(d) for d in DEVICES}
    api = ApiClient(serve.url)
    wait(lambda: len([d for d in api.get("/api/v1/fleet") if d["state"] == "online"]) == 3, 90, "3 agents online")
    yield serve, api, agents
    serve.stop()
