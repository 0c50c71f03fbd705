from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from device.cli import build_parser, main
from device.engine.runtimes import registry
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from device.engine.runtimes.openvino import OpenVINOConfig
from device.engine.runtimes.registry import runtime_config
from device.engine.runtimes.tensorrt import TensorRTConfig
from tests.device.fakes import FakeRuntime
from tests.helpers import REPO, agent_env


def test_bench_cli_json_contract(zoo_onnx: Path, golden_dir: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "bench",
            str(zoo_onnx),
            "--data",
            str(golden_dir),
            "--json",
            "--iterations",
            "20",
            "--warmup",
            "2",
            "--throughput-batch",
            "32",
            "--rounds",
            "2",
            "--profile",
        ],
        cwd=REPO,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    r = json.loads(out.stdout)
    for key in (
        "runtime",
        "precision",
        "latency_ms",
        "raw_throughput_ips",
        "top1",
        "n_images",
        "end_to_end_throughput_ips",
    ):
        assert key in r, key
    assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    # --runtime auto: OpenVINO where the openvino extra is installed, else ONNX Runtime
    assert r["runtime"] in ("openvino", "onnxruntime") and r["precision"] == "fp32" and r["n_images"] == 200
    assert 0 <= r["top1"] <= 1
    # raw and end-to-end come from alternating rounds; the reported figures are their medians
    assert len(r["raw_throughput_rounds"]) == len(r["end_to_end_rounds"]) == r["rounds"] == 2
    assert min(r["raw_throughput_rounds"]) <= r["raw_throughput_ips"] <= max(r["raw_throughput_rounds"])
    assert r["end_to_end_vs_raw"] == pytest.approx(r["end_to_end_throughput_ips"] / r["raw_throughput_ips"])
    # --profile: per-layer times that add up to the reported total
    assert r["layers"] and r["layers_total_ms"] == pytest.approx(sum(x["ms"] for x in r["layers"]))
    assert r["profile_batch"] == 32 and all(x["output_shape"][0] == 32 for x in r["layers"] if x["output_shape"])


def _runtime_choices() -> list[str]:
    """The --runtime choices of `edgeloop-agent bench`, as argparse holds them."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    runtime = next(a for a in sub.choices["bench"]._actions if a.dest == "runtime")
    return list(runtime.choices or [])


def test_runtime_choices_come_from_the_registry(
    fake_runtime: type[FakeRuntime], zoo_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _runtime_choices() == ["auto", "fake", "onnxruntime", "openvino", "tensorrt"]
    args = ["bench", str(zoo_onnx), "--runtime", "fake", "--json", "--iterations", "3", "--warmup", "1"]
    rc = main([*args, "--throughput-batch", "8", "--rounds", "1"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and r["runtime"] == "fake" and r["runtime_version"] == "0.0" and r["throughput_batch"] == 8


def test_runtime_choices_without_a_test_backend() -> None:
    assert _runtime_choices() == ["auto", "onnxruntime", "openvino", "tensorrt"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "m.onnx", "--runtime", "fake"])


def test_bench_flags_reach_the_backends_that_have_them() -> None:
    auto = runtime_config("auto", threads=2, sparse=True)
    assert isinstance(auto, registry.AutoConfig)
    assert auto.backend("onnxruntime") == OnnxRuntimeConfig(threads=2)
    # --sparse reaches auto too (issue 16); threads is every backend's field (TensorRT ignores it)
    assert auto.backend("tensorrt") == TensorRTConfig(sparse_weights=True, threads=2)
    assert runtime_config("tensorrt", threads=2, sparse=True) == TensorRTConfig(sparse_weights=True, threads=2)
    assert runtime_config("openvino", threads=0) == OpenVINOConfig()  # 0 is the backend's default, as unset
    assert runtime_config("onnxruntime", threads=3, sparse=True) == OnnxRuntimeConfig(threads=3)
