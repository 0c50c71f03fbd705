from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.cli import main
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from device.engine.runtimes.openvino import OpenVINOConfig
from device.engine.runtimes.tensorrt import TensorRTConfig


def _check(tmp_path: Path, runtime: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'device_id = "d"\nrequire_signature = false\nstate_dir = "{tmp_path}"\n{runtime}')
    assert main(["check-config", "--config", str(cfg)]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_check_config_prints_every_field_of_the_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``auto`` with per-backend sub-tables, as in deploy/agent.toml: every backend, every field."""
    auto = '[runtime]\ntype = "auto"\n[runtime.tensorrt]\nmax_batch = 64\n[runtime.onnxruntime]\nthreads = 2\n'
    out = _check(tmp_path, auto, capsys)
    assert out["runtime"] == {
        "type": "auto",
        "tensorrt": TensorRTConfig(max_batch=64).model_dump(mode="json"),
        "openvino": OpenVINOConfig().model_dump(mode="json"),
        "onnxruntime": OnnxRuntimeConfig(threads=2).model_dump(mode="json"),
    }
    ort = _check(tmp_path, '[runtime]\ntype = "onnxruntime"\nmax_batch = 8\n', capsys)
    assert ort["runtime"] == OnnxRuntimeConfig(max_batch=8).model_dump(mode="json")


def test_check_config_names_an_unknown_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('device_id = "d"\nrequire_signature = false\n[runtime]\ntype = "nosuch"\n')
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert (
        "runtime: " in err
        and "unknown runtime type 'nosuch'; known types: auto, onnxruntime, openvino, tensorrt" in err
    )
