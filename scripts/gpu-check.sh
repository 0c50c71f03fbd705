#!/usr/bin/env bash
# The TensorRT check for a machine with a GPU (a Jetson with JetPack, or an x86 server with the TensorRT wheels):
# the `gpu` tests, then `edgeloop-agent bench --json` on the zoo's FP32, FP16 and INT8 (Q/DQ) files, each beside
# `trtexec` on the same ONNX when trtexec is on the PATH, all written to ONE JSON (format: docs/testing.md, "GPU check").
# On a board with DLA cores (Jetson AGX Orin, Orin NX, Xavier) the FP16 and INT8 files run on DLA core 0 too
# (bench --dla-core 0; trtexec --useDLACore=0 --allowGPUFallback). At the end it prints one table: a row per run,
# edgeloop's p50/p99 latency and throughput beside trtexec's, and their ratios.
#
#   scripts/gpu-check.sh [--out FILE] [--sparse24 FILE.onnx] [--data DIR] [--batch N] [--throughput-batch N]
#                        [--iterations N] [--rounds N] [--skip-tests]
#
# --sparse24: a 2:4 sparse ONNX to add (benched with --sparse, trtexec with --sparsity=enable). The zoo has none:
#   make one with `edgeloop compress --recipe resnet20-sparse24 ...` and pass its FP16 file.
# PYTHON (default .venv/bin/python, else python3) must have edgeloop[device,dev] and TensorRT + cuda-python.
# Exit codes: 0 all ran and passed, 1 a test or a benchmark failed (the JSON says which), 2 bad arguments,
# 3 no GPU / no TensorRT here (nothing is written).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
[ -n "$PY" ] || { [ -x .venv/bin/python ] && PY=.venv/bin/python; } || PY=python3

if ! reason=$("$PY" -c 'from device.engine.runtimes.tensorrt import TensorRTRuntime as T; print(T.probe() or "")' 2>&1); then
  echo "gpu-check: cannot run edgeloop with $PY: ${reason##*$'\n'}" >&2
  exit 3
fi
if [ -n "$reason" ]; then
  echo "gpu-check: no GPU / no TensorRT here: $reason" >&2
  echo "gpu-check: run this on a Jetson with JetPack (venv made with --system-site-packages) or a CUDA GPU server" >&2
  exit 3
fi

exec "$PY" - "$@" <<'PYTHON'
"""The body of scripts/gpu-check.sh: runs the tools and writes the one JSON."""

import argparse
import functools
import json
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ZOO = Path("host/zoo")
MODELS = [("resnet20.onnx", "fp32"), ("resnet20-fp16.onnx", "fp16"), ("resnet20-int8-trt.onnx", "int8")]
STAT = re.compile(r"(min|max|mean|median|percentile\((\d+)%\)) = ([0-9.eE+-]+) ms")


def parse_args():
    p = argparse.ArgumentParser(prog="scripts/gpu-check.sh")
    p.add_argument("--out", default=f"gpu-check-{socket.gethostname()}.json")
    p.add_argument("--sparse24", help="a 2:4 sparse ONNX (the zoo has none)")
    p.add_argument("--data", help="labelled ImageFolder set: adds top-1 and end-to-end throughput to the bench")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--throughput-batch", type=int, default=64)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="raw-throughput rounds of the bench (their median)")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    return p.parse_args()


def run(cmd, timeout=1800):
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout} s", time.perf_counter() - t0
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - t0


def tail(text, n=5):
    return "\n".join(text.strip().splitlines()[-n:])


def gpu_tests():
    rc, out, err, secs = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"])
    return {"exit_code": rc, "summary": tail(out or err, 1), "seconds": round(secs, 1), "passed": rc == 0}


def host_info():
    import tensorrt

    from device.engine.runtimes.tensorrt import TensorRTRuntime

    with TensorRTRuntime() as rt:
        gpu, precisions, dla_cores = rt.accelerator(), list(rt.supported_precisions()), rt.dla_cores()
    tegra = Path("/etc/nv_tegra_release")
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "tensorrt": str(tensorrt.__version__),
        "gpu": gpu,
        "fast_precisions": precisions,
        "dla_cores": dla_cores,
        "l4t": tegra.read_text().splitlines()[0] if tegra.is_file() else None,
        "trtexec": shutil.which("trtexec"),
    }


def bench(path, precision, sparse, args, dla):
    cmd = [sys.executable, "-m", "device.cli", "bench", str(path), "--runtime", "tensorrt", "--precision", precision]
    cmd += ["--batch", str(args.batch), "--throughput-batch", str(args.throughput_batch), "--json"]
    cmd += ["--dla-core", str(dla)] if dla is not None else []
    cmd += ["--iterations", str(args.iterations), "--rounds", str(args.rounds)] + (["--sparse"] if sparse else [])
    cmd += ["--data", args.data] if args.data else []
    rc, out, err, _ = run(cmd)
    if rc != 0:
        return {"command": cmd, "error": tail(err or out)}
    return {"command": cmd, **json.loads(out)}


def trtexec_stats(line):
    stats = {}
    for key, pct, value in STAT.findall(line):
        stats[f"p{pct}" if pct else ("p50" if key == "median" else key)] = float(value)
    return stats


def trtexec_once(path, precision, sparse, batch, input_name, major, help_text, dla):
    cmd = ["trtexec", f"--onnx={path}", f"--shapes={input_name}:{batch}x3x32x32", f"--iterations={max(50, batch)}"]
    cmd += [f"--useDLACore={dla}", "--allowGPUFallback"] if dla is not None else []
    if major >= 11 or (precision == "fp16" and path.name.endswith("-fp16.onnx") and dla is None):
        # as edgeloop builds them: strongly typed (TensorRT 11 has nothing else; 10 for an FP16 ONNX off DLA)
        cmd += ["--stronglyTyped"] if "--stronglyTyped" in help_text else []
    elif precision in ("fp16", "int8"):
        cmd += ["--fp16"] + (["--int8"] if precision == "int8" else [])  # as edgeloop's TensorRT 10 builder config
    if precision == "fp32" and "--noTF32" in help_text:
        cmd += ["--noTF32"]  # edgeloop's fp32 is IEEE FP32
    cmd += ["--sparsity=enable"] if sparse else []
    rc, out, err, _ = run(cmd)
    text = out + err
    result = {"command": cmd, "exit_code": rc}
    qps = re.search(r"Throughput: ([0-9.eE+-]+) qps", text)
    latency = re.search(r"\] Latency: (.*)", text)
    compute = re.search(r"GPU Compute Time: (.*)", text)
    if rc != 0 or not (qps and latency):
        return {**result, "error": tail(text)}
    result.update(throughput_ips=float(qps.group(1)) * batch, latency_ms=trtexec_stats(latency.group(1)))
    result["gpu_compute_ms"] = trtexec_stats(compute.group(1)) if compute else None
    return result


@functools.cache
def trtexec_help():
    return "\n".join(run(["trtexec", "--help"], timeout=60)[1:3])


def trtexec(path, precision, sparse, args, major, dla):
    if shutil.which("trtexec") is None:
        return None
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    input_name = graph.input[0].name
    help_text = trtexec_help()
    return {
        "latency": trtexec_once(path, precision, sparse, args.batch, input_name, major, help_text, dla),
        "throughput": trtexec_once(path, precision, sparse, args.throughput_batch, input_name, major, help_text, dla),
    }


def comparison(ours, theirs):
    """edgeloop's figure over trtexec's (above 1: edgeloop higher)."""
    if not theirs or "error" in ours or "error" in theirs["latency"] or "error" in theirs["throughput"]:
        return None
    return {
        "latency_p50": ours["latency_ms"]["p50"] / theirs["latency"]["latency_ms"]["p50"],
        "latency_p99": ours["latency_ms"]["p99"] / theirs["latency"]["latency_ms"]["p99"],
        "throughput": ours["raw_throughput_ips"] / theirs["throughput"]["throughput_ips"],
    }


def runs_to_make(args, dla_cores):
    """(file, precision, 2:4 sparse, DLA core or None) of every run, and the files left out (why)."""
    runs = [(ZOO / name, precision, False, None) for name, precision in MODELS]
    skipped = []
    if args.sparse24:
        sparse = Path(args.sparse24)
        runs.append((sparse, "int8" if "int8" in sparse.name else "fp16", True, None))
    else:
        why = "the zoo has no 2:4 ONNX: make one (edgeloop compress --recipe resnet20-sparse24), pass --sparse24 FILE"
        skipped.append({"file": "resnet20-sparse24", "why": why})
    if dla_cores > 0:  # DLA runs FP16 and INT8 only
        runs += [(ZOO / name, precision, False, 0) for name, precision in MODELS if precision != "fp32"]
    return runs, skipped


def dig(value, *path):
    """value[path[0]][path[1]]..., None where a step is missing or failed."""
    for key in path:
        if not isinstance(value, dict) or "error" in value or key not in value:
            return None
        value = value[key]
    return value


TABLE = [("file", "<28"), ("precision", "<9"), ("on", "<5"), ("p50 ms", ">8"), ("p99 ms", ">8"), ("img/s", ">9"),
         ("trtexec p50", ">11"), ("trtexec p99", ">11"), ("trtexec img/s", ">13"), ("p50 ratio", ">9"),
         ("img/s ratio", ">11")]  # fmt: skip


def table(report):
    """One human-readable row per run: edgeloop's figures, trtexec's, and edgeloop / trtexec."""
    s = report["settings"]
    lines = [f"latency at batch {s['batch']}, throughput at batch {s['throughput_batch']}; ratio: edgeloop / trtexec"]
    lines.append("  ".join(format(name, spec) for name, spec in TABLE))
    for m in report["models"]:
        ours, theirs, ratio = m["edgeloop"], m["trtexec"], m["edgeloop_over_trtexec"]
        values = [
            Path(m["file"]).name + (" (2:4)" if m["sparse"] else ""),
            m["precision"],
            "GPU" if m["dla_core"] is None else f"DLA{m['dla_core']}",
            dig(ours, "latency_ms", "p50"), dig(ours, "latency_ms", "p99"), dig(ours, "raw_throughput_ips"),
            dig(theirs, "latency", "latency_ms", "p50"), dig(theirs, "latency", "latency_ms", "p99"),
            dig(theirs, "throughput", "throughput_ips"), dig(ratio, "latency_p50"), dig(ratio, "throughput"),
        ]  # fmt: skip
        kinds = ["", "", "", ".3f", ".3f", ",.0f", ".3f", ".3f", ",.0f", ".2f", ".2f"]
        cells = [v if not kind else ("-" if v is None else format(v, kind)) for v, kind in zip(values, kinds)]
        if "error" in ours:
            cells[3] = "failed"
        lines.append("  ".join(format(cell, spec) for cell, (_, spec) in zip(cells, TABLE)))
    return "\n".join(lines)


def main():
    args = parse_args()
    report = {"schema": "edgeloop-gpu-check/1", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["host"] = host_info()
    major = int(report["host"]["tensorrt"].split(".")[0])
    report["settings"] = {k: getattr(args, k) for k in ("batch", "throughput_batch", "iterations", "rounds", "data")}
    report["gpu_tests"] = None if args.skip_tests else gpu_tests()
    runs, report["skipped"] = runs_to_make(args, report["host"]["dla_cores"])
    report["models"] = []
    for path, precision, sparse, dla in runs:
        on = "" if dla is None else f", DLA core {dla}"
        print(f"gpu-check: {path.name} ({precision}{', 2:4' if sparse else ''}{on})", file=sys.stderr)
        ours = bench(path, precision, sparse, args, dla)
        theirs = trtexec(path, precision, sparse, args, major, dla)
        entry = {"file": str(path), "precision": precision, "sparse": sparse, "dla_core": dla}
        entry.update(edgeloop=ours, trtexec=theirs, edgeloop_over_trtexec=comparison(ours, theirs))
        report["models"].append(entry)
    named = [(m["file"] + ("" if m["dla_core"] is None else f" on DLA{m['dla_core']}"), m) for m in report["models"]]
    failed = [name for name, m in named if "error" in m["edgeloop"]]
    failed += [name for name, m in named if m["trtexec"] and any("error" in r for r in m["trtexec"].values())]
    tests_failed = report["gpu_tests"] is not None and not report["gpu_tests"]["passed"]
    report["ok"] = not failed and not tests_failed
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    outcome = "" if report["ok"] else f"; failed: {failed or 'the gpu tests'}"
    print(f"gpu-check: wrote {args.out}{outcome}", file=sys.stderr)
    return 0 if report["ok"] else 1


sys.exit(main())
PYTHON
