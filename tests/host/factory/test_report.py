"""`edgeloop report`: every variant on the same images in one run, speed-ups against the baselines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host.factory.ort import installed_runtimes
from host.factory.report import pareto_front
from shared.digest import sha256_file
from tests.helpers import REPO

ZOO = REPO / "host" / "zoo"


def test_pareto_front() -> None:
    # (throughput, accuracy): the middle point is dominated by the last one
    assert pareto_front([(100, 90.0), (200, 85.0), (250, 88.0), (400, 80.0)]) == [0, 2, 3]


def test_report_cli_on_zoo_variants(tmp_path: Path, golden_dir: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    for name in ("resnet20-int8.onnx", "resnet20-slim.onnx", "resnet20-slim.json"):
        if not (ZOO / name).exists():
            pytest.fail(f"host/zoo/{name} is missing")
        shutil.copy(ZOO / name, build / name)
    argv = [sys.executable, "-m", "host.cli", "report", str(build), "--data", str(golden_dir),
            "--baseline", str(ZOO / "resnet20.onnx"), "--torch-baseline", str(ZOO / "resnet20.pt"),
            "--threads", "1", "--rounds", "1", "--json-out", str(tmp_path / "r.json")]  # fmt: skip
    runtimes = installed_runtimes()  # onnxruntime, and openvino where its extra is installed (CI installs it)
    out = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    r = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "r.png").stat().st_size > 10_000
    rows = {(v["file"], v["runtime"]): v for v in r["variants"]}
    files = {"resnet20.onnx", "resnet20-int8.onnx", "resnet20-slim.onnx"}
    assert set(rows) == {(f, rt) for f in files for rt in runtimes}  # every variant on every installed runtime
    by_file = {f: rows[f, r["baseline_runtime"]] for f in files}
    base = by_file["resnet20.onnx"]
    assert base["speedup_vs_baseline_onnx"] == 1.0 and base["top1_delta_points"] == 0.0
    for rt in runtimes:  # the baseline on its fastest FP32 runtime is the reference: nothing beats it at FP32
        assert rows["resnet20.onnx", rt]["speedup_vs_baseline_onnx"] <= 1.0
        assert rows["resnet20.onnx", rt]["top1_delta_points"] == 0.0
    assert all(v["n_images"] == 200 and 0 < v["top1"] <= 1 for v in r["variants"])
    slim = by_file["resnet20-slim.onnx"]
    assert slim["macs"] < 0.65 * base["macs"] and slim["params"] < base["params"]
    assert by_file["resnet20-int8.onnx"]["onnx_bytes"] < 0.5 * base["onnx_bytes"]
    for v in r["variants"]:  # ratios are computed from the medians the report stores
        assert v["speedup_vs_baseline_onnx"] == pytest.approx(v["throughput_ips"] / base["throughput_ips"])
        same = rows["resnet20.onnx", v["runtime"]]
        assert v["speedup_vs_baseline_same_runtime"] == pytest.approx(v["throughput_ips"] / same["throughput_ips"])
        assert v["speedup_vs_torch_eager"] == pytest.approx(v["throughput_ips"] / r["torch_eager_fp32_throughput_ips"])
    for rt in runtimes:  # against the unpruned INT8 file on the same runtime: only compressed variants
        int8 = rows["resnet20-int8.onnx", rt]["throughput_ips"]
        v = rows["resnet20-slim.onnx", rt]
        assert v["speedup_vs_unpruned_int8"] == pytest.approx(v["throughput_ips"] / int8)
        assert v["slower_than_unpruned_int8"] == (v["throughput_ips"] < int8)
        assert (f"resnet20-slim.onnx on {rt}: slower than the unpruned INT8" in out.stdout) == (
            v["throughput_ips"] < int8
        )
        for f in ("resnet20.onnx", "resnet20-int8.onnx"):
            assert rows[f, rt]["speedup_vs_unpruned_int8"] is None and not rows[f, rt]["slower_than_unpruned_int8"]
    for (f, _rt), v in rows.items():  # which bytes were measured: the ship rule matches release files by it
        assert v["sha256"] == sha256_file(build / f if (build / f).exists() else ZOO / f)
    assert r["machine"]["logical_cores"] >= 1 and r["machine"]["onnxruntime"]
    assert "resnet20-slim.onnx" in out.stdout and "measured on:" in out.stdout
    assert len(r["runtimes"]) == len(runtimes) and r["skipped"] == []
