"""`edgeloop demo` as a user runs it: the committed zoo, the embedded broker, three agent processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from host.fleet.client import ApiClient
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
        # the field act: the adapted release went to the drifted device alone, and its field top-1 went up there
        assert "fleet now: jetson-01=resnet20@1.1.0, jetson-02=resnet20@1.1.0, jetson-03=resnet20@1.2.0" in text
        field = re.search(r"field top-1 on (\d+) held-out night images: ([\d.]+)% -> ([\d.]+)% .*, better: kept", text)
        assert field, text[-3000:]
        assert int(field[1]) > 0 and float(field[3]) > float(field[2])
        took = re.search(r"demo finished in (\d+)s", text)
        print(f"field top-1 on {field[1]} held-out night images {field[2]}% -> {field[3]}%; demo {took and took[1]} s")
        dashboard = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", text)
        assert dashboard
        rollouts = {r["release_version"]: r for r in ApiClient(dashboard[1]).get("/api/v1/rollouts")}
        canary = rollouts["1.2.0"]
        assert canary["state"] == "completed" and [d["device_id"] for d in canary["devices"]] == ["jetson-03"]
        assert len(rollouts["1.1.0"]["devices"]) == 3
        # quiet by default: the host's log lines go to the file it names, not between the demo's own lines
        log = tmp_path / "work" / "demo.log"
        assert f"logs: {log}" in text and " INFO " not in text and " INFO " in log.read_text()
        assert not re.search(r"^[WE]\d{4} ", text, re.MULTILINE), "torch's own log lines reached the terminal"
        agents = [c for c in psutil.Process(proc.pid).children(recursive=True) if "device.cli" in " ".join(c.cmdline())]
        assert len(agents) == 3
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        _gone, alive = psutil.wait_procs(agents, timeout=30)
        assert not alive, f"agents left running after SIGTERM: {[a.pid for a in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
