"""The dashboard in a real headless Chromium, with data from a real rollout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from host.fleet.release import golden_top1
from shared.modelmeta import read_meta
from tests.e2e.conftest import wait
from tests.fixtures import MakeRelease

pytestmark = pytest.mark.e2e


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def _headless(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1400,1600",
        *extra,
        url,
    ]
    return subprocess.run([_chromium(), *flags], capture_output=True, text=True, timeout=120)


def test_dashboard_renders_fleet_and_latency_chart(
    fleet: Any, zoo_onnx: Path, make_release: MakeRelease, tmp_path: Path
) -> None:
    serve, api, _ = fleet
    m = make_release(zoo_onnx, "1.0.0", source_top1=golden_top1(zoo_onnx, read_meta(zoo_onnx)))
    cfg = {
        "waves": ["1", "100%"],
        "max_accuracy_drop": 1.0,
        "bench": {"iterations": 30, "throughput_batch": 16, "eval_limit": 200},
    }
    rid = api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg})["id"]
    wait(lambda: api.get(f"/api/v1/rollouts/{rid}")["state"] == "completed", 300, "rollout")
    wait(lambda: len(api.get("/api/v1/telemetry")) >= 3, 30, "telemetry")
    dom = _headless(serve.url + "/", tmp_path, "--dump-dom").stdout
    assert 'data-loaded="1"' in dom, dom[:2000]
    rows = re.findall(r'<tr data-device="(dev-\d)">', dom)
    assert sorted(rows) == ["dev-1", "dev-2", "dev-3"]
    points = re.search(r'id="latency-chart"[^>]*data-points="(\d+)"', dom)
    assert points is not None and int(points.group(1)) >= 3
    assert "<canvas" in dom and "uplot" in dom  # uPlot drew the chart
    assert 'data-release="r20@1.0.0"' in dom and f'data-rollout="{rid}"' in dom
    shot = Path(os.environ.get("EDGELOOP_SCREENSHOT_OUT", tmp_path / "dashboard.png"))
    done = _headless(serve.url + "/", tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
