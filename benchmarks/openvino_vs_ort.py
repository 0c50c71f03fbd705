"""OpenVINO against ONNX Runtime on the zoo's FP32 and INT8 files, side by side in one run.

    python benchmarks/openvino_vs_ort.py [--threads 1 2] [--rounds 2] [--batch 256] [--seconds 2]

Every (model, runtime, threads) engine is built and loaded first; then each round measures every one
of them once (batch-256 throughput on random input, ``device.engine.bench.measure_throughput``, the same
code as ``edgeloop-agent bench``), so machine noise hits all alike. It prints img/s per round and
OpenVINO / ONNX Runtime ratios from the medians, and writes benchmarks/openvino-result.json with
the machine (CPU model, cores, ISA). Where ``auto`` puts OpenVINO (its ``priority``) was set from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine import bench
from device.engine.runtimes import load_onnx, runtime_config
from device.engine.runtimes.base import Runtime
from device.engine.sysinfo import machine
from shared.modelmeta import read_meta

ZOO = REPO / "host" / "zoo"
MODELS = [
    "resnet20.onnx",
    "resnet20-slim.onnx",
    "resnet20-int8.onnx",
    "resnet20-slim-int8.onnx",
    "resnet20-int8-trt.onnx",
    "resnet20-slim-int8-trt.onnx",
]


def _open_all(models: list[str], threads: list[int], tmp: Path) -> dict[tuple[str, str, int], Runtime]:
    opened: dict[tuple[str, str, int], Runtime] = {}
    for model in models:
        precision = read_meta(ZOO / model).precision
        for t in threads:
            for name in ("onnxruntime", "openvino"):
                config = runtime_config(name, threads=t)
                opened[(model, name, t)] = load_onnx(config, ZOO / model, precision, tmp / f"{model}-{name}-{t}")
    return opened


def _rounds(opened: dict[tuple[str, str, int], Runtime], rounds: int, batch: int, seconds: float) -> dict[Any, list]:
    ips: dict[tuple[str, str, int], list[float]] = {k: [] for k in opened}
    for r in range(rounds):
        for key, rt in opened.items():
            ips[key].append(bench.measure_throughput(rt, batch=batch, min_seconds=seconds).ips)
            print(f"round {r + 1}: {key[0]:<28} {key[1]:<12} {key[2]} thr  {ips[key][-1]:8,.0f} img/s", flush=True)
    return ips


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "openvino-result.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        opened = _open_all(args.models, args.threads, Path(tmp))
        versions = {
            name: next(rt.version() for k, rt in opened.items() if k[1] == name) for name in ("onnxruntime", "openvino")
        }
        accelerators = {name: next(rt.accelerator() for k, rt in opened.items() if k[1] == name) for name in versions}
        try:
            ips = _rounds(opened, args.rounds, args.batch, args.seconds)
        finally:
            for rt in opened.values():
                rt.close()
    rows = []
    for model in args.models:
        for t in args.threads:
            ort, ov = ips[(model, "onnxruntime", t)], ips[(model, "openvino", t)]
            rows.append({
                "model": model, "threads": t,
                "onnxruntime_ips": [round(v, 1) for v in ort], "openvino_ips": [round(v, 1) for v in ov],
                "openvino_vs_onnxruntime": round(statistics.median(ov) / statistics.median(ort), 3),
            })  # fmt: skip
    fastest_fp32 = {
        t: max(statistics.median(ips[(m, n, t)]) for m in ("resnet20.onnx",) for n in ("onnxruntime", "openvino"))
        for t in args.threads
    }
    for row in rows:
        best = max(statistics.median(row["onnxruntime_ips"]), statistics.median(row["openvino_ips"]))
        row["best_vs_fastest_baseline_fp32"] = round(best / fastest_fp32[row["threads"]], 3)
    result = {
        "machine": machine(),
        "versions": versions,
        "accelerators": accelerators,
        "batch": args.batch,
        "rounds": args.rounds,
        "seconds_per_measurement": args.seconds,
        "what": "batch throughput (img/s) on random input, every engine once per round, interleaved",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'model':<28} thr  {'ORT img/s':>17}  {'OpenVINO img/s':>17}  OV/ORT  best/FP32 base")
    for row in rows:
        o, v = row["onnxruntime_ips"], row["openvino_ips"]
        print(
            f"{row['model']:<28} {row['threads']:>3}  {min(o):7,.0f}-{max(o):<7,.0f}  {min(v):7,.0f}-{max(v):<7,.0f}  "
            f"{row['openvino_vs_onnxruntime']:5.2f}x  {row['best_vs_fastest_baseline_fp32']:5.2f}x"
        )
    print(f"measured on {result['machine']}; {versions}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
