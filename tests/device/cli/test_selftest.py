from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.cli import main


def test_selftest_builds_a_model_and_checks_it_on_the_golden_images(
    zoo_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["selftest", str(zoo_onnx), "--runtime", "onnxruntime", "--threads", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["passed"] and r["model_passed"] and r["runtime"] == "onnxruntime"
    assert r["golden_top1"] > 0.8 and r["runtimes"]["onnxruntime"] is None
    assert "tensorrt" in r["runtimes"] and r["machine"]["arch"] and r["python"]


def test_an_untrained_model_fails_the_selftest(random_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", str(random_onnx), "--runtime", "onnxruntime", "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (below 50%)" in out and "selftest     FAILED" in out
