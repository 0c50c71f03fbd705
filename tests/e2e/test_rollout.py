"""Closed loop against a real Mosquitto: `edgeloop serve` + 3 real agent processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from host.fleet.client import ApiClient
from host.fleet.release import golden_top1
from shared import protocol as p
from shared.modelmeta import read_meta
from tests.e2e.conftest import DEVICES, wait
from tests.fixtures import MakeRelease
from tests.helpers import Mosquitto, Recorder

pytestmark = pytest.mark.e2e

FAST = {"warmup": 2, "iterations": 30, "throughput_batch": 16, "evaluate": True, "eval_limit": 200}


def _start(api: ApiClient, release: str, waves: list[str], drop: float = 1.0) -> str:
    cfg = {"waves": waves, "max_accuracy_drop": drop, "wave_timeout_s": 180, "bench": FAST}
    return str(api.post("/api/v1/rollouts", {"release": release, "fleet": "lab", "config": cfg})["id"])


def _finish(api: ApiClient, rid: str, timeout: float = 300) -> dict[str, Any]:
    return dict(
        wait(
            lambda: (r := api.get(f"/api/v1/rollouts/{rid}"))["state"] in ("completed", "rolled_back", "aborted") and r,
            timeout,
            f"rollout {rid}",
        )
    )


def _releases_by_device(api: ApiClient) -> dict[str, str | None]:
    return {d["device_id"]: d["release"] for d in api.get("/api/v1/fleet")}


def test_good_release_reaches_every_device_wave_by_wave(fleet: Any, zoo_onnx: Path, make_release: MakeRelease) -> None:
    _serve, api, _ = fleet
    src = golden_top1(zoo_onnx, read_meta(zoo_onnx))
    m = make_release(zoo_onnx, "1.0.0", source_top1=src)
    r = _finish(api, _start(api, str(m.ref), ["1", "2", "100%"]))
    assert r["state"] == "completed", r["reason"]
    assert [w["state"] for w in r["waves"]] == ["passed", "passed", "passed"]
    assert [len([d for d in r["devices"] if d["wave"] == i]) for i in range(3)] == [1, 1, 1]
    assert all(d["state"] == "passed" and d["top1"] is not None for d in r["devices"])
    wait(lambda: set(_releases_by_device(api).values()) == {"r20@1.0.0"}, 30, "every device reports the release")
    fleet_view = api.get("/api/v1/fleet")
    assert all(d["p99_ms"] is not None and d["runtime"] == "onnxruntime" for d in fleet_view)


def test_bad_release_is_stopped_at_the_canary_and_rolled_back(
    fleet: Any, zoo_onnx: Path, random_onnx: Path, make_release: MakeRelease
) -> None:
    _serve, api, _ = fleet
    src = golden_top1(zoo_onnx, read_meta(zoo_onnx))
    good = make_release(zoo_onnx, "1.0.0", source_top1=src)
    assert _finish(api, _start(api, str(good.ref), ["100%"]))["state"] == "completed"
    bad = make_release(random_onnx, "2.0.0", source_top1=src)  # ~10% top-1: far below the gate
    r = _finish(api, _start(api, str(bad.ref), ["1", "25%", "100%"]))
    assert r["state"] == "rolled_back"
    assert "gate" in r["reason"] and "top-1" in r["reason"]
    canary = [d for d in r["devices"] if d["wave"] == 0]
    assert len(canary) == 1 and canary[0]["state"] == "rolled_back"
    assert all(d["state"] == "pending" for d in r["devices"] if d["wave"] > 0)  # never reached
    wait(lambda: set(_releases_by_device(api).values()) == {"r20@1.0.0"}, 60, "canary back on 1.0.0")


def test_killed_serve_resumes_without_resending_a_wave(
    fleet: Any, zoo_onnx: Path, make_release: MakeRelease, mosquitto: Mosquitto
) -> None:
    serve, api, _ = fleet
    rec = Recorder(mosquitto.port, "edgeloop/v1/lab/+/cmd", client_id="cmd-recorder")
    src = golden_top1(zoo_onnx, read_meta(zoo_onnx))
    m = make_release(zoo_onnx, "1.0.0", source_top1=src)
    rid = _start(api, str(m.ref), ["1", "2", "3"])
    wait(lambda: api.get(f"/api/v1/rollouts/{rid}")["waves"][0]["state"] == "passed", 180, "canary passed")
    serve.kill()  # SIGKILL mid-rollout: no clean shutdown of anything
    time.sleep(2)
    serve.start()
    api2 = ApiClient(serve.url)
    r = _finish(api2, rid)
    assert r["state"] == "completed", r["reason"]
    deploys = [p.decode_command(raw) for raw in rec.topics("/cmd")]
    per_device: dict[str, set[str]] = {}
    for c in deploys:
        assert isinstance(c, p.DeployCommand) and c.rollout_id == rid
        per_device.setdefault(c.device_id, set()).add(str(c.message_id))
    assert {d: len(ids) for d, ids in per_device.items()} == dict.fromkeys(DEVICES, 1)  # one deploy each, never two
    rec.close()
