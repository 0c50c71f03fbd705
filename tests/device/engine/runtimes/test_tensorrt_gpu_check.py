"""``scripts/gpu-check.sh``: its refusal where no GPU is, and its whole run (bench + trtexec -> one JSON and one
table) on fakes, on a GPU alone and on a board with DLA cores.

The end-to-end run puts the fakes of ``trt_fakes.py`` where a subprocess imports ``tensorrt`` and
``cuda.bindings.runtime``, and a fake ``trtexec`` (trtexec's own summary lines) on the PATH; the
script runs unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.engine.runtimes.tensorrt import TensorRTRuntime
from tests.helpers import REPO, agent_env

SCRIPT = REPO / "scripts" / "gpu-check.sh"

FAKE_TENSORRT = """
import os, sys
from tests.device.engine.runtimes.trt_fakes import fake_tensorrt
sys.modules[__name__] = fake_tensorrt(
    int(os.environ.get("FAKE_TRT_MAJOR", "10")), dla_cores=int(os.environ.get("FAKE_TRT_DLA", "0"))
)
"""
FAKE_CUDART = """
from tests.device.engine.runtimes.trt_fakes import FakeCudart
_cudart = FakeCudart()
globals().update({n: getattr(_cudart, n) for n in dir(_cudart) if n.startswith("cuda") or n == "_current_device_set"})
"""
FAKE_TRTEXEC = """#!/bin/sh
# prints trtexec's summary lines; the batch comes from --shapes=input:Nx3x32x32
echo "$@" >> "$(dirname "$0")/calls.log"
case "$*" in --help) echo "  --stronglyTyped  --noTF32  --sparsity=spec"; exit 0;; esac
batch=$(echo "$*" | sed -n 's/.*--shapes=[^:]*:\\([0-9]*\\)x.*/\\1/p')
echo "[12/01/2025-10:00:00] [I] === Performance summary ==="
echo "[12/01/2025-10:00:00] [I] Throughput: 1000 qps"
echo "[12/01/2025-10:00:00] [I] Latency: min = 0.25 ms, max = 1.5 ms, mean = 0.5 ms, median = 0.5 ms, \\
percentile(90%) = 0.75 ms, percentile(95%) = 0.8 ms, percentile(99%) = 1 ms"
echo "[12/01/2025-10:00:00] [I] GPU Compute Time: min = 0.2 ms, max = 1 ms, mean = 0.4 ms, median = 0.4 ms, \\
percentile(90%) = 0.6 ms, percentile(95%) = 0.7 ms, percentile(99%) = 0.9 ms"
echo "&&&& PASSED TensorRT.trtexec [TensorRT v101300] # trtexec batch $batch"
"""


def _fake_gpu_env(root: Path, dla_cores: int = 0) -> dict[str, str]:
    (root / "tensorrt").mkdir(parents=True)
    (root / "tensorrt" / "__init__.py").write_text(FAKE_TENSORRT)
    (root / "cuda" / "bindings").mkdir(parents=True)
    (root / "cuda" / "__init__.py").write_text("")
    (root / "cuda" / "bindings" / "__init__.py").write_text("")
    (root / "cuda" / "bindings" / "runtime.py").write_text(FAKE_CUDART)
    (root / "bin").mkdir()
    trtexec = root / "bin" / "trtexec"
    trtexec.write_text(FAKE_TRTEXEC)
    trtexec.chmod(0o755)
    env = agent_env()
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    env["PYTHON"] = sys.executable
    env["FAKE_TRT_DLA"] = str(dla_cores)
    return env


def _table(stdout: str) -> list[list[str]]:
    """The rows of the table the script prints last (cells split on runs of two or more spaces)."""
    lines = stdout.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("file "))
    return [[c for c in line.strip().split("  ") if c.strip()] for line in lines[start + 1 :]]


def test_gpu_check_says_there_is_no_gpu_here(tmp_path: Path) -> None:
    if TensorRTRuntime.probe() is None:
        pytest.skip("this machine has TensorRT and a GPU")
    env = {**agent_env(), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3 and "no GPU / no TensorRT here" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_gpu_check_writes_one_json_with_both_tools(tmp_path: Path) -> None:
    env = _fake_gpu_env(tmp_path / "fake")
    out = tmp_path / "gpu-check.json"
    sparse = REPO / "host" / "zoo" / "resnet20-fp16.onnx"  # stands in for a 2:4 file: only the flags differ
    args = [
        "--skip-tests",
        "--out",
        str(out),
        "--iterations",
        "5",
        "--rounds",
        "1",
        "--throughput-batch",
        "8",
        "--sparse24",
        str(sparse),
    ]
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["schema"] == "edgeloop-gpu-check/1" and r["ok"] is True and r["gpu_tests"] is None
    assert r["host"]["tensorrt"] == "10.13.3.9" and r["host"]["gpu"] == "Orin (sm_87)"
    assert [(Path(m["file"]).name, m["precision"], m["sparse"]) for m in r["models"]] == [
        ("resnet20.onnx", "fp32", False),
        ("resnet20-fp16.onnx", "fp16", False),
        ("resnet20-int8-trt.onnx", "int8", False),
        ("resnet20-fp16.onnx", "fp16", True),
    ]
    for m in r["models"]:
        ours, theirs = m["edgeloop"], m["trtexec"]
        assert ours["runtime"] == "tensorrt" and ours["precision"] == m["precision"] and ours["throughput_batch"] == 8
        assert ours["engine_gpu_memory_mb"] > 0 and ours["raw_throughput_ips"] > 0
        assert theirs["latency"]["latency_ms"] == {"min": 0.25, "max": 1.5, "mean": 0.5, "p50": 0.5, "p90": 0.75,
                                                   "p95": 0.8, "p99": 1.0}  # fmt: skip
        assert theirs["throughput"]["throughput_ips"] == 8000.0  # 1000 qps at batch 8
        assert m["edgeloop_over_trtexec"]["latency_p50"] == pytest.approx(ours["latency_ms"]["p50"] / 0.5)
    calls = [c for c in (tmp_path / "fake" / "bin" / "calls.log").read_text().splitlines() if "--onnx=" in c]
    flags = {Path(c.split("--onnx=")[1].split()[0]).name + (" sparse" if "sparsity" in c else ""): c for c in calls}
    assert len(calls) == 8  # a latency and a throughput run of each model
    assert "--noTF32" in flags["resnet20.onnx"] and "--fp16 --int8" in flags["resnet20-int8-trt.onnx"]
    assert (
        "--stronglyTyped" in flags["resnet20-fp16.onnx"] and "--sparsity=enable" in flags["resnet20-fp16.onnx sparse"]
    )
    assert r["skipped"] == []
    assert r["host"]["dla_cores"] == 0 and all(m["dla_core"] is None for m in r["models"])
    rows = _table(done.stdout)
    assert [(row[0].strip(), row[1].strip(), row[2].strip()) for row in rows] == [
        ("resnet20.onnx", "fp32", "GPU"),
        ("resnet20-fp16.onnx", "fp16", "GPU"),
        ("resnet20-int8-trt.onnx", "int8", "GPU"),
        ("resnet20-fp16.onnx (2:4)", "fp16", "GPU"),
    ]
    first, ours = rows[0], r["models"][0]
    assert len(first) == 11 and first[3].strip() == f"{ours['edgeloop']['latency_ms']['p50']:.3f}"
    assert first[6].strip() == "0.500" and first[7].strip() == "1.000" and first[8].strip() == "8,000"
    assert first[9].strip() == f"{ours['edgeloop_over_trtexec']['latency_p50']:.2f}"


def test_gpu_check_runs_the_fp16_and_int8_files_on_dla_too(tmp_path: Path) -> None:
    env = _fake_gpu_env(tmp_path / "fake", dla_cores=2)
    out = tmp_path / "gpu-check.json"
    args = ["--skip-tests", "--out", str(out), "--iterations", "5", "--rounds", "1", "--throughput-batch", "8"]
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["ok"] is True and r["host"]["dla_cores"] == 2
    dla = [m for m in r["models"] if m["dla_core"] is not None]
    assert [(Path(m["file"]).name, m["precision"], m["dla_core"]) for m in dla] == [
        ("resnet20-fp16.onnx", "fp16", 0),
        ("resnet20-int8-trt.onnx", "int8", 0),
    ]
    for m in dla:
        assert m["edgeloop"]["accelerator"] == "Orin (sm_87), DLA core 0" and "--dla-core" in m["edgeloop"]["command"]
    rows = _table(done.stdout)
    assert [(row[0].strip(), row[2].strip()) for row in rows][-2:] == [
        ("resnet20-fp16.onnx", "DLA0"),
        ("resnet20-int8-trt.onnx", "DLA0"),
    ]
    calls = [c for c in (tmp_path / "fake" / "bin" / "calls.log").read_text().splitlines() if "--useDLACore" in c]
    assert len(calls) == 4 and all("--useDLACore=0 --allowGPUFallback" in c for c in calls)
    assert all("--fp16" in c and "--stronglyTyped" not in c for c in calls)  # TensorRT 10's DLA path: the flags
