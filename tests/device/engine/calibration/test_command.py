"""`edgeloop-agent calibrate` on the zoo model with real ONNX Runtime quantization (torch-free)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from device.engine.calibration import calibset, forms
from device.engine.calibration.command import calibrate_command
from device.engine.calibration.quantize import qdq_is_symmetric_int8
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from shared.modelmeta import read_meta
from tests.helpers import REPO


@pytest.fixture
def calib_dir(golden_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "field"
    d.mkdir()
    for f in sorted(golden_dir.rglob("*.jpg"))[::2]:
        shutil.copy(f, d / f"{f.parent.name}-{f.name}")
    return d


def test_calibrate_writes_this_machines_form_and_verifies_it(
    zoo_onnx: Path, calib_dir: Path, golden_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8.onnx"
    r = calibrate_command(zoo_onnx, calib_dir, out, OnnxRuntimeConfig(), "minmax", n_images=64, verify_dir=golden_dir)
    expected = forms.choose("onnxruntime", False)
    assert r["form"]["name"] == expected.form.name and r["why"] == expected.reason
    assert r["calibration_images"] == 64 and r["held_out_images"] == 100 - 64
    assert r["verification"]["passed"], r["verification"]
    assert r["verification"]["labelled"]["drop_points"] <= 1.0
    meta = read_meta(out)
    assert meta.precision == "int8" and meta.extra["qdq_form"] == expected.form.name
    assert not qdq_is_symmetric_int8(onnx.load(str(out)))  # the CPU form: uint8 activations


def test_calibrate_refuses_a_bad_set_and_writes_nothing(zoo_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(calibset.CalibrationSetError, match="at least 32"):
        calibrate_command(zoo_onnx, tmp_path / "empty", tmp_path / "x.onnx", OnnxRuntimeConfig())
    assert not (tmp_path / "x.onnx").exists()


def test_calibrate_cli_json(zoo_onnx: Path, calib_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "calibrate",
            str(zoo_onnx),
            "--calib-dir",
            str(calib_dir),
            "--out",
            str(tmp_path / "q.onnx"),
            "--method",
            "minmax",
            "--images",
            "50",
            "--runtime",
            "onnxruntime",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    assert {"form", "why", "runtime", "machine", "verification", "calibration_s"} <= set(r)
    assert r["machine"]["isa"] is not None
