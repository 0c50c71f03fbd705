"""`edgeloop recalibrate` from the host, end to end: a real Mosquitto, a real `edgeloop serve` and real
agents (ONNX Runtime), the release rolled out through the host, every outcome in the store, in
`fleet status` and on the dashboard (headless Chromium).

To make the outcomes certain rather than lucky (as tests/e2e/test_recalibrate.py does on the device
side): the release's INT8 file was calibrated on near-black images, so its ranges are far too
narrow, and dev-1 runs it because its INT8 gate is off (``[int8] verify = false``). The field is
the golden set through the ``night`` preset (labelled, on the device: the field evaluation). A
calibration on those night images must beat the broken engine; one on near-black images must lose
to the good engine. dev-2 keeps the gate on: it refuses the broken INT8 file at activation, and the
fleet view says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.engine.calibration import forms
from device.engine.calibration.quantize import quantize
from host.factory.field.shift import shift_dataset
from host.fleet.client import ApiClient
from host.fleet.release import ReleaseStore, create_release
from shared import datasets, imaging
from shared.protocol import ReleaseManifest
from tests.e2e.conftest import ServeProcess, StartAgent, wait
from tests.e2e.test_dashboard import _headless
from tests.helpers import REPO, Mosquitto, agent_env, free_port

pytestmark = pytest.mark.e2e

# the gate off and INT8 pinned: the broken INT8 file goes live, as it would have before the gate
NO_GATE = '[int8]\nverify = false\n[selection]\nprecision = "int8"\n'
BENCH = {"warmup": 2, "iterations": 20, "throughput_batch": 16, "throughput_rounds": 1, "eval_limit": 50}


def _flat(src: Path, dst: Path, scale: float = 1.0) -> Path:
    """The images of a labelled folder, unlabelled (and scaled in brightness)."""
    dst.mkdir(parents=True)
    cv2 = imaging.opencv()
    for i, f in enumerate(sorted(src.rglob("*.*"))):
        if f.suffix.lower() in datasets.IMAGE_SUFFIXES:
            img = (imaging.load(f).astype(np.float32) * scale).astype(np.uint8)
            cv2.imwrite(str(dst / f"{i:04d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return dst


def _broken_release(zoo_onnx: Path, golden_dir: Path, store: ReleaseStore, keys: tuple[Path, Path], tmp: Path) -> Any:
    """The zoo FP32 model and an INT8 file calibrated on near-black images (ranges far too narrow)."""
    build = tmp / "build"
    build.mkdir()
    shutil.copy(zoo_onnx, build / "resnet20.onnx")
    dark = (datasets.load_labelled(golden_dir, limit=64).images * 0.05).astype(np.uint8)
    quantize(zoo_onnx, build / "resnet20-int8.onnx", dark, forms.choose("onnxruntime", False).form, "onnxruntime")
    return create_release(build, "r20", "1.0.0", store, sign_key=keys[0], source_top1=0.9)


def _edgeloop(serve: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host.cli", *args, "--server", serve.url],
        cwd=REPO, env=agent_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _recalibrate(serve: ServeProcess, *args: str) -> dict[str, Any]:
    """`edgeloop recalibrate ... --wait --json`: the one recalibration's record, once the device answered."""
    done = _edgeloop(serve, "recalibrate", *args, "--wait", "--timeout", "300", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (record,) = json.loads(done.stdout)["recalibrations"]
    result: dict[str, Any] = record
    return result


def _roll_out(api: ApiClient, m: ReleaseManifest) -> None:
    cfg = {"waves": ["100%"], "max_accuracy_drop": 100, "bench": BENCH}  # the broken INT8 must go live on dev-1
    rid = api.post("/api/v1/rollouts", {"release": str(m.ref), "fleet": "lab", "config": cfg})["id"]
    wait(lambda: api.get(f"/api/v1/rollouts/{rid}")["state"] == "completed", 300, "the rollout to complete")


def test_recalibrate_promotes_only_when_not_worse_and_manual_waits_for_promote(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    golden_dir: Path,
    store: ReleaseStore,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    night = tmp_path / "night"
    shift_dataset(golden_dir, night, "night", seed=0)
    night_flat, dim = _flat(night, tmp_path / "night-flat"), _flat(golden_dir, tmp_path / "dim", 0.12)
    m = _broken_release(zoo_onnx, golden_dir, store, keys, tmp_path)
    serve = ServeProcess(tmp_path, mosquitto.url, store.root, free_port(), command_key=keys[0])
    serve.start()
    try:
        agents = {"dev-1": start_agent("dev-1", extra=NO_GATE), "dev-2": start_agent("dev-2")}
        api = ApiClient(serve.url)
        wait(lambda: len([d for d in api.get("/api/v1/fleet") if d["state"] == "online"]) == 2, 90, "2 agents")
        _roll_out(api, m)
        devices = {d["device_id"]: d for d in api.get("/api/v1/fleet")}
        assert devices["dev-1"]["precision"] == "int8" and devices["dev-2"]["precision"] == "fp32"
        assert devices["dev-2"]["int8_gate"]["code"] == "int8_verification_failed"  # the gate refused it
        assert devices["dev-1"]["int8_gate"] is None and devices["dev-1"]["calibration"] is None
        _field_loop(serve, api, night, night_flat, dim)
        _shown(serve, api, tmp_path)
        assert all(a.alive for a in agents.values())
    finally:
        serve.stop()


def _field_loop(serve: ServeProcess, api: ApiClient, night: Path, night_flat: Path, dim: Path) -> None:
    judged = ("--eval-dir", str(night), "--images", "150")  # a labelled folder on the device: top-1 old vs new
    # 1. night images served by the host: better than the broken engine, so auto swaps it in
    good = _recalibrate(serve, "dev-1", "--promote", "auto", "--calib-data", str(night_flat), *judged)
    o = good["outcome"]
    assert good["state"] == "promoted" and good["options"]["source"] == "url", good
    assert o["evaluation"] == "labelled" and o["n_eval"] == 200 and o["n_images"] == 150 and o["promoted"]
    assert o["after"] > o["before"] and o["better"] and o["form"] and o["moved_ranges"]
    assert o["calibration_s"] is not None and o["build_s"] is not None
    # 2. near-black "field" images: worse than the engine of step 1, so auto keeps that one
    worse = _recalibrate(serve, "dev-1", "--promote", "auto", "--calib-dir", str(dim), *judged)
    assert worse["state"] == "rejected" and worse["outcome"]["better"] is False, worse
    assert worse["outcome"]["before"] == pytest.approx(o["after"]) and not worse["outcome"]["promoted"]
    # 3. manual keeps even a worse engine on the device, for a person to decide; nothing changes yet
    kept = _recalibrate(serve, "dev-1", "--promote", "manual", "--calib-dir", str(dim), *judged)
    assert kept["state"] == "kept" and kept["promote"] == "manual", kept
    assert kept["outcome"]["before"] == pytest.approx(o["after"])
    # 4. `recalibrate promote DEVICE`: the latest kept calibration goes live
    promote = _recalibrate(serve, "promote", "dev-1")
    assert promote["state"] == "promoted" and promote["calibration_id"] == kept["id"], promote
    assert api.get(f"/api/v1/recalibrations/{kept['id']}")["promoted_by"] == promote["id"]
    # 5. the next calibration starts from the promoted engine (step 3's figure), not step 1's
    last = _recalibrate(serve, "dev-1", "--promote", "manual", "--calib-dir", str(night_flat), *judged)
    assert last["state"] == "kept" and last["outcome"]["before"] == pytest.approx(kept["outcome"]["after"])
    assert last["outcome"]["before"] < o["after"]


def _shown(serve: ServeProcess, api: ApiClient, tmp_path: Path) -> None:
    """Every outcome is in the store, in `fleet status` and on the dashboard."""
    listed = api.get("/api/v1/recalibrations?device=dev-1")
    assert [r["state"] for r in listed] == ["kept", "promoted", "promoted", "rejected", "promoted"]  # newest first
    status = _edgeloop(serve, "fleet", "status", "--json")
    assert status.returncode == 0, status.stderr
    dev1 = next(d for d in json.loads(status.stdout) if d["device_id"] == "dev-1")
    assert dev1["calibration"]["state"] == "kept" and dev1["calibration"]["evaluation"] == "labelled"
    table = _edgeloop(serve, "fleet", "status")
    assert table.returncode == 0 and "kept " in table.stdout and "refused" in table.stdout, table.stdout
    dom = _headless(serve.url + "/", tmp_path, "--dump-dom").stdout
    assert 'data-loaded="1"' in dom, dom[:2000]
    states = re.findall(r'<tr data-recalibration="[0-9a-f-]{36}" data-state="(\w+)">', dom)
    assert states == [r["state"] for r in listed], dom[:4000]
    row = re.search(r'<tr data-device="dev-2">.*?</tr>', dom, re.S)
    assert row is not None and 'data-gate="int8_verification_failed"' in row.group(0)
    row = re.search(r'<tr data-device="dev-1">.*?</tr>', dom, re.S)
    assert row is not None and 'data-calibration="kept"' in row.group(0)
    shot = Path(os.environ.get("EDGELOOP_RECALIBRATION_SCREENSHOT_OUT", tmp_path / "recalibration.png"))
    done = _headless(serve.url + "/", tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
