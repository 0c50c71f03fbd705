"""The host's view of serving, end to end: a real agent serves with `[inference]`, its TelemetryReports
reach the store, the fleet view flags drift once it served shifted images, /metrics says so, and
`edgeloop fleet sample` brings field images back from its reservoir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from host.fleet.release import ReleaseStore
from shared import imaging
from tests.e2e.conftest import wait
from tests.e2e.serving_stack import DRIFT_WINDOW, ServingFleet, serving_fleet, shifted_copy
from tests.fixtures import MakeRelease
from tests.helpers import Mosquitto

pytestmark = pytest.mark.e2e


def _served(fleet: ServingFleet) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = fleet.api.get("/api/v1/telemetry/live?device=dev-1")
    return rows


def test_served_telemetry_drift_and_field_samples(
    mosquitto: Mosquitto,
    store: ReleaseStore,
    make_release: MakeRelease,
    zoo_onnx: Path,
    keys: tuple[Path, Path],
    golden_dir: Path,
    tmp_path: Path,
) -> None:
    with serving_fleet(mosquitto, store, make_release, zoo_onnx, keys, golden_dir, tmp_path) as fleet:
        clean = fleet.loadgen(golden_dir)  # every golden image once: the images the reference was taken on
        assert clean["errors"] == 0 and clean["requests"] == 200 and clean["releases"] == {fleet.release: 200}
        wait(lambda: sum(r["requests"] for r in _served(fleet)) >= 200, 60, "telemetry of 200 requests")
        rows = _served(fleet)
        assert all(r["release_name"] == "r20" and r["runtime"] == "onnxruntime" for r in rows)
        assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in rows if r["requests"])
        dev = wait(lambda: (d := fleet.device())["drift"] is not None and d, 30, "a drift score")
        assert dev["drift"]["drifted"] is False and dev["drift"]["n_images"] == DRIFT_WINDOW, dev["drift"]
        assert dev["drift"]["input_drift"] == dev["drift"]["score"] and dev["drift"]["label_drift"] is not None
        assert dev["served_p99_ms"] is not None and dev["served_release"] == fleet.release

        night = shifted_copy(golden_dir, tmp_path / "night", "night")
        shifted = fleet.loadgen(night)
        assert shifted["errors"] == 0 and shifted["requests"] == 200

        def drifted() -> dict[str, Any] | None:
            done = fleet.edgeloop("fleet", "status", "--json")
            assert done.returncode == 0, done.stderr
            (d,) = json.loads(done.stdout)
            return d if d["drift"] and d["drift"]["drifted"] else None

        dev = wait(drifted, 60, "the device flagged as drifted")
        assert dev["drift"]["score"] >= dev["drift"]["threshold"] and dev["device_id"] == "dev-1"
        table = fleet.edgeloop("fleet", "status")
        assert table.returncode == 0 and "DRIFT " in table.stdout, table.stdout

        wait(lambda: sum(r["requests"] for r in _served(fleet)) >= 400, 60, "telemetry of 400 requests")
        body = fleet.api.get_bytes("/metrics").decode()
        assert f'edgeloop_device_drifted{{device="dev-1",fleet="lab",release="{fleet.release}"}} 1.0' in body
        assert 'edgeloop_served_latency_ms{device="dev-1",fleet="lab",quantile="0.99"}' in body
        assert 'edgeloop_served_requests_total{device="dev-1",fleet="lab"} 400.0' in body

        out = tmp_path / "field"
        got = fleet.edgeloop("fleet", "sample", "dev-1", "--n", "6", "--out", str(out), "--json")
        assert got.returncode == 0, got.stderr + fleet.agent.text()[-3000:]
        result = json.loads(got.stdout)
        assert result["received"] == 6 and result["fleet"] == "lab"
        images = sorted(out.iterdir())
        assert len(images) == 6 and all(imaging.decode(f.read_bytes()).shape == (32, 32, 3) for f in images)
        answer = fleet.api.get(f"/api/v1/devices/lab/dev-1/samples/{result['command_id']}")
        assert "from reservoir" in answer["events"][0]["message"]  # what the device served, not its eval set
