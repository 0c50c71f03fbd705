"""`edgeloop-agent bench --all`: the activation's selection on local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.cli import main
from device.cli.bench_all import compare
from device.engine.runtimes.registry import runtime_config
from shared.errors import EdgeloopError
from tests.conftest import ZOO


def test_every_precision_is_verified_timed_and_the_fastest_named(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(ZOO / "resnet20-slim.onnx"), str(ZOO / "resnet20-slim-int8.onnx")]
    rc = main(
        ["bench", "--all", *files, "--runtime", "onnxruntime", "--throughput-batch", "16", "--seconds", "0.2", "--json"]
    )
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["machine"]["cpu"] and "isa" in r["machine"] and r["batch"] == 16
    timed = {c["precision"]: c for c in r["candidates"]}
    assert set(timed) == {"int8", "fp32"}
    assert timed["int8"]["verified"] is True and timed["int8"]["agreement"] > 0.9
    fastest = max(timed.values(), key=lambda c: c["throughput_ips"])
    assert fastest["chosen"] and r["chosen"]["precision"] == fastest["precision"]
    assert r["selection_s"] > 0


def test_the_table_names_the_winner(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--all", str(ZOO / "resnet20.onnx"), "--throughput-batch", "8", "--seconds", "0.1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "bench --all on" in out and "chosen: " in out and "resnet20.onnx" in out


def test_two_files_of_one_precision_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EdgeloopError, match="one file per precision"):
        compare([ZOO / "resnet20.onnx", ZOO / "resnet20-slim.onnx"], runtime_config("onnxruntime"), 8, 0.1, None, None)


def test_several_files_need_all() -> None:
    assert main(["bench", str(ZOO / "resnet20.onnx"), str(ZOO / "resnet20-slim.onnx")]) != 0
