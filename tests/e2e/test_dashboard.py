"""The dashboard in a real headless Chromium, with data from a real rollout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from host.fleet.release import ReleaseStore, golden_top1
from shared import protocol as p
from shared.modelmeta import read_meta
from tests.e2e.conftest import wait
from tests.e2e.serving_stack import serving_fleet, shifted_copy
from tests.fixtures import MakeRelease
from tests.helpers import Mosquitto, Recorder

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
    fleet: Any, mosquitto: Mosquitto, zoo_onnx: Path, make_release: MakeRelease, tmp_path: Path
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
    # a Jetson whose TensorRT does not load says so in its status (DeviceStatus.warnings): the row shows it
    fix = "TensorRT did not load: install JetPack's python3-libnvinfer <and> run in its venv"
    jetson = p.DeviceStatus(device_id="dev-9", fleet="lab", state="online", runtime="onnxruntime", warnings=(fix,))
    publisher = Recorder(mosquitto.port, topic_filter="nothing/#", client_id="jetson-status")
    try:
        publisher.publish(p.status_topic("lab", "dev-9"), p.encode(jetson))
    finally:
        publisher.close()
    wait(lambda: any(d["device_id"] == "dev-9" for d in api.get("/api/v1/fleet")), 30, "dev-9's status")
    dom = _headless(serve.url + "/", tmp_path, "--dump-dom").stdout
    assert 'data-loaded="1"' in dom, dom[:2000]
    rows = re.findall(r'<tr data-device="(dev-\d)">', dom)
    assert sorted(rows) == ["dev-1", "dev-2", "dev-3", "dev-9"]
    warned = re.search(r'<tr data-device="dev-9">.*?</tr>', dom, re.S)
    assert warned is not None and 'data-warnings="1"' in warned.group(0) and "1 warning" in warned.group(0)
    assert "&lt;and&gt;" in warned.group(0)  # the message in the tooltip, escaped
    assert all('data-warnings="' not in r for r in re.findall(r'<tr data-device="dev-[123]">.*?</tr>', dom, re.S))
    points = re.search(r'id="latency-chart"[^>]*data-points="(\d+)"', dom)
    assert points is not None and int(points.group(1)) >= 3
    assert "<canvas" in dom and "uplot" in dom  # uPlot drew the chart
    assert 'data-release="r20@1.0.0"' in dom and f'data-rollout="{rid}"' in dom
    shot = Path(os.environ.get("EDGELOOP_SCREENSHOT_OUT", tmp_path / "dashboard.png"))
    done = _headless(serve.url + "/", tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]


def test_dashboard_draws_live_served_latency_and_drift_flags(
    mosquitto: Mosquitto,
    store: ReleaseStore,
    make_release: MakeRelease,
    zoo_onnx: Path,
    keys: tuple[Path, Path],
    golden_dir: Path,
    tmp_path: Path,
) -> None:
    """Real TelemetryReports from an agent serving with [inference]: the live chart, the drift chart and flag."""
    with serving_fleet(mosquitto, store, make_release, zoo_onnx, keys, golden_dir, tmp_path) as fleet:
        fleet.loadgen(golden_dir, "--duration", "3")  # several 1 s telemetry windows
        wait(lambda: len(fleet.api.get("/api/v1/telemetry/live")) >= 3, 60, "three telemetry points")
        wait(lambda: fleet.device()["drift"] is not None, 30, "a drift score")
        dom = _headless(fleet.serve.url + "/", tmp_path, "--dump-dom").stdout
        assert 'data-loaded="1"' in dom, dom[:2000]
        points = re.search(r'id="live-chart"[^>]*data-points="(\d+)"[^>]*data-series="(\d+)"', dom)
        assert points is not None and int(points.group(1)) >= 3 and points.group(2) == "1", dom[:3000]
        assert re.search(r'id="drift-chart"[^>]*data-points="[1-9]', dom)
        assert re.search(r'id="label-drift-chart"[^>]*data-points="[1-9]', dom)
        assert dom.count("<canvas") >= 4  # live, input drift, label drift and benchmark latency charts (uPlot)
        row = re.search(r'<tr data-device="dev-1">.*?</tr>', dom, re.S)
        assert row is not None and 'data-drift="ok"' in row.group(0)
        assert re.search(r'data-label-drift="\d+\.\d\d"', row.group(0)), row.group(0)  # both figures shown
        night = shifted_copy(golden_dir, tmp_path / "night", "night")
        fleet.loadgen(night)
        wait(lambda: fleet.device()["drift"]["drifted"], 60, "the device flagged as drifted")
        dom = _headless(fleet.serve.url + "/", tmp_path, "--dump-dom").stdout
        row = re.search(r'<tr data-device="dev-1">.*?</tr>', dom, re.S)
        assert row is not None and 'data-drift="drifted"' in row.group(0) and "DRIFT" in row.group(0)
        shot = Path(os.environ.get("EDGELOOP_SERVING_SCREENSHOT_OUT", tmp_path / "serving.png"))
        done = _headless(fleet.serve.url + "/", tmp_path, f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
