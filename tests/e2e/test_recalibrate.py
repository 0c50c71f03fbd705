"""Field re-calibration on a real agent process over a real Mosquitto (ONNX Runtime, torch-free device).

The release carries the FP32 model and an INT8 file; to make outcomes certain rather than lucky, the
"broken" INT8 file is calibrated on near-black images (ranges far too narrow), and a "hurtful" field
set is near-black too, so re-calibrating on it must make things worse on real images.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.engine.calibration import forms
from device.engine.calibration.quantize import quantize
from device.engine.loadgen import loadgen
from host.factory.field.shift import shift_dataset
from host.fleet.release import ReleaseStore, create_release
from shared import datasets, imaging
from shared import protocol as p
from tests.e2e.conftest import StartAgent
from tests.helpers import Mosquitto, Recorder, free_port, signed

pytestmark = pytest.mark.e2e
KEY: list[Path] = []  # the session's signing key (set by the autouse fixture below)


@pytest.fixture(autouse=True)
def _command_key(keys: tuple[Path, Path]) -> None:
    KEY[:] = [keys[0]]


FAST = p.BenchSettings(warmup=2, iterations=20, throughput_batch=16, throughput_rounds=1, eval_limit=50)
# the gate off and INT8 pinned: the broken INT8 file goes live, as it would have before the gate
NO_GATE = '[int8]\nverify = false\n[selection]\nprecision = "int8"\n'


def _flat(src: Path, dst: Path, scale: float = 1.0) -> Path:
    """The images of a labelled folder, unlabelled (and scaled in brightness)."""
    dst.mkdir(parents=True)
    cv2 = imaging.opencv()
    for i, f in enumerate(sorted(src.rglob("*.*"))):
        if f.suffix.lower() in datasets.IMAGE_SUFFIXES:
            img = (imaging.load(f).astype(np.float32) * scale).astype(np.uint8)
            cv2.imwrite(str(dst / f"{i:04d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return dst


def _release(zoo_onnx: Path, golden_dir: Path, store: ReleaseStore, keys: tuple[Path, Path], tmp: Path) -> Any:
    build = tmp / "build"
    build.mkdir()
    shutil.copy(zoo_onnx, build / "resnet20.onnx")
    dark = (datasets.load_labelled(golden_dir, limit=64).images * 0.05).astype(np.uint8)
    quantize(zoo_onnx, build / "resnet20-int8.onnx", dark, forms.choose("onnxruntime", False).form, "onnxruntime")
    return create_release(build, "r20", "1.0.0", store, sign_key=keys[0], source_top1=0.9)


def _wait(rec: Recorder, suffix: str, n: int = 1, timeout: float = 180) -> list[p.AnyReport]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [p.decode_report(r) for r in rec.topics(suffix)]
        if len(got) >= n:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"{n} x {suffix}")


def _send(rec: Recorder, cmd: p.DeployCommand | p.RecalibrateCommand) -> None:
    rec.publish(p.command_topic("lab", "dev-1"), signed(cmd, KEY[0]))


@pytest.fixture
def field(golden_dir: Path, tmp_path: Path) -> dict[str, Path]:
    night = tmp_path / "night"
    shift_dataset(golden_dir, night, "night", seed=0)
    return {
        "night": night,
        "night_flat": _flat(night, tmp_path / "night-flat"),
        "black": _flat(golden_dir, tmp_path / "black", 0.0),
        "dim": _flat(golden_dir, tmp_path / "dim", 0.12),
    }


def test_recalibration_promotes_only_when_not_worse_and_refuses_bad_sets(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    golden_dir: Path,
    store: ReleaseStore,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
    field: dict[str, Path],
) -> None:
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path)
    agent = start_agent(extra=NO_GATE)  # the gate off: the broken INT8 file goes live, as it would have before
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    _send(rec, p.DeployCommand(device_id="dev-1", manifest=m, base_url=served, bench=FAST))
    (dep,) = _wait(rec, "/report/deploy")
    assert isinstance(dep, p.DeployReport) and dep.ok and dep.precision == "int8"
    # 1. a bad set: refused, the running engine stays
    _send(rec, p.RecalibrateCommand(device_id="dev-1", source="local", calib_dir=str(field["black"]), n_images=64))
    (bad,) = _wait(rec, "/report/calibration")
    assert isinstance(bad, p.CalibrationReport) and bad.error and not bad.promoted
    assert any(
        isinstance(e, p.EventReport) and e.code == "calibration_set_constant" for e in _wait(rec, "/report/event")
    )
    # 2. field images, labelled field eval: the new engine is better, so it is promoted
    good = p.RecalibrateCommand(
        device_id="dev-1",
        source="local",
        calib_dir=str(field["night_flat"]),
        eval_dir=str(field["night"]),
        n_images=150,
        base_url=served,
    )
    _send(rec, good)
    cal = _wait(rec, "/report/calibration", 2)[1]
    assert isinstance(cal, p.CalibrationReport) and cal.error is None, cal
    assert cal.evaluation == "labelled" and cal.n_eval == 200 and cal.promoted and cal.better
    assert cal.top1_after is not None and cal.top1_before is not None and cal.top1_after > cal.top1_before
    assert cal.form == forms.choose("onnxruntime", False).form.name and cal.moved_ranges
    assert cal.calibration_s is not None and cal.build_s is not None
    # 3. a near-black "field" set judged on real labelled images: worse, so not promoted
    _send(
        rec,
        p.RecalibrateCommand(
            device_id="dev-1", source="local", calib_dir=str(field["dim"]), eval_dir=str(field["night"]), n_images=150
        ),
    )
    worse = _wait(rec, "/report/calibration", 3)[2]
    assert isinstance(worse, p.CalibrationReport) and worse.error is None
    assert worse.better is False and not worse.promoted
    assert worse.top1_before == pytest.approx(cal.top1_after)  # the engine of step 2 still runs
    rec.close()
    assert agent.alive


def test_without_labels_it_judges_by_agreement_with_fp32_from_the_reservoir(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    golden_dir: Path,
    store: ReleaseStore,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
    field: dict[str, Path],
) -> None:
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path)
    port = free_port()
    extra = f'{NO_GATE}[inference]\nlisten = "127.0.0.1:{port}"\n[inference.reservoir]\ncapacity = 500\n'
    agent = start_agent(extra=extra, eval_dir=None)
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    _send(rec, p.DeployCommand(device_id="dev-1", manifest=m, base_url=served, bench=FAST))
    _wait(rec, "/report/deploy")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).close()
            break
        except OSError:
            time.sleep(0.2)
    served_field = loadgen(url, field["night_flat"], concurrency=4)
    assert served_field["errors"] == 0 and served_field["requests"] == 200
    time.sleep(1)  # the reservoir writes on a thread of its own
    _send(rec, p.RecalibrateCommand(device_id="dev-1", n_images=120))  # source: the reservoir
    (cal,) = _wait(rec, "/report/calibration")
    rec.close()
    assert isinstance(cal, p.CalibrationReport) and cal.error is None, cal
    assert cal.source == "reservoir" and cal.evaluation == "agreement" and cal.n_eval == 80
    assert cal.agreement_after is not None and cal.agreement_before is not None
    assert cal.agreement_after > cal.agreement_before and cal.promoted
    assert agent.alive


def test_an_int8_engine_that_fails_verification_is_refused(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    golden_dir: Path,
    store: ReleaseStore,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path)
    start_agent()  # the gate on (the default)
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    _send(rec, p.DeployCommand(device_id="dev-1", manifest=m, base_url=served, bench=FAST))
    (dep,) = _wait(rec, "/report/deploy")
    events = _wait(rec, "/report/event")
    rec.close()
    assert isinstance(dep, p.DeployReport) and dep.ok and dep.precision == "fp32"
    assert [c.precision for c in dep.candidates if c.chosen] == ["fp32"]
    assert any(isinstance(e, p.EventReport) and e.code == "int8_verification_failed" for e in events)
