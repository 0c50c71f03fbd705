"""`edgeloop demo` as a user runs it: the committed zoo, the embedded broker, three agent processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.e2e

ZOO = REPO / "host" / "zoo"


@pytest.mark.skipif(not (ZOO / "resnet20-slim-int8.onnx").exists(), reason="the zoo has no slimmed model yet")
def test_demo_closes_the_loop_and_sigterm_stops_its_agents(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "demo", "--keep-running", "--workdir", str(tmp_path / "work")],
        cwd=REPO,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180  # the bar for the whole demo
        while "--keep-running: serving" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()[-3000:]
            time.sleep(0.5)
        text = out.read_text()
        assert "--keep-running: serving" in text, text[-3000:]
        assert "fleet now: jetson-01=resnet20@1.1.0, jetson-02=resnet20@1.1.0, jetson-03=resnet20@1.1.0" in text
        # quiet by default: the host's log lines go to the file it names, not between the demo's own lines
        log = tmp_path / "work" / "demo.log"
        assert f"logs: {log}" in text and " INFO " not in text and " INFO " in log.read_text()
        agents = [c for c in psutil.Process(proc.pid).children(recursive=True) if "device.cli" in " ".join(c.cmdline())]
        assert len(agents) == 3
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        _gone, alive = psutil.wait_procs(agents, timeout=30)
        assert not alive, f"agents left running after SIGTERM: {[a.pid for a in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
