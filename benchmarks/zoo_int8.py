"""Re-make the zoo's INT8 files in the portable CPU form, stamp drift references, and measure them.

    python benchmarks/zoo_int8.py --train TRAIN --test TEST [--write]

The zoo's INT8 files had 8-bit weights, which saturate u8 x s8 pair sums on x86 without VNNI: on an
AMD EPYC (AVX2) they lost 0.72 (resnet20-int8) to 4.86 points (resnet20-slim-int8-trt) against
FP32, while on a VNNI Xeon they lost none. This re-quantizes each zoo FP32 model with 7-bit weights
(``device.engine.calibration.forms.U8S7`` for the ONNX Runtime file, ``S8S7`` for the TensorRT one), with the
calibration the recipes use (percentile 99.999 on 1,024 class-balanced training images), through the
same code as the ``ptq`` step, and stamps the drift reference (the golden images) into every file.

Without ``--write`` it measures the files as they are. It then evaluates every zoo file on the full
test set on this machine and writes benchmarks/zoo-int8-result.json (with the CPU and its ISA).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine import bench, reference, sysinfo
from device.engine.calibration import forms
from device.engine.calibration.quantize import quantize
from device.engine.runtimes import open_onnx
from shared import datasets
from shared.modelmeta import read_meta

ZOO = REPO / "host" / "zoo"
MODELS = ("resnet20", "resnet20-slim")
FLAVOURS = (("-int8", forms.U8S7, "onnxruntime"), ("-int8-trt", forms.S8S7, "tensorrt"))


def remake(name: str, train: str) -> None:
    fp32 = ZOO / f"{name}.onnx"
    ref = reference.reference_of(fp32)
    reference.stamp(fp32, ref)  # the INT8 files inherit it from the FP32 metadata
    images = datasets.load_labelled(train, limit=1024).images
    for suffix, form, runtime in FLAVOURS:
        out = ZOO / f"{name}{suffix}.onnx"
        quantize(fp32, out, images, form, runtime, "percentile", 99.999)
        print(f"wrote {out.relative_to(REPO)} ({form.name})", flush=True)
    fp16 = ZOO / f"{name}-fp16.onnx"
    if fp16.exists():
        reference.stamp(fp16, ref)


def top1(path: Path, samples: list[datasets.Sample], members: dict[str, bytes]) -> float:
    meta = read_meta(path)
    with open_onnx("onnxruntime", path, meta.precision) as rt:
        return bench.evaluate(rt, samples, meta.classes, meta.preprocessing, members=members).top1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="the CIFAR-10 training split (ImageFolder or .tar.gz::train)")
    ap.add_argument("--test", required=True, help="the 10,000-image test split")
    ap.add_argument("--write", action="store_true", help="re-make the INT8 files (else only measure)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "zoo-int8-result.json")
    args = ap.parse_args()
    if args.write:
        for name in MODELS:
            remake(name, args.train)
    samples = datasets.list_samples(args.test)
    members = datasets.archive_members(samples)
    rows = []
    for name in MODELS:
        base = top1(ZOO / f"{name}.onnx", samples, members)
        for suffix in ("", "-int8", "-int8-trt"):
            path = ZOO / f"{name}{suffix}.onnx"
            acc = base if not suffix else top1(path, samples, members)
            meta = read_meta(path)
            rows.append(
                {
                    "file": path.name,
                    "precision": meta.precision,
                    "qdq_form": meta.extra.get("qdq_form"),
                    "top1": acc,
                    "drop_points": round(100 * (base - acc), 2),
                }
            )
            print(f"{path.name:28s} {100 * acc:6.2f}%  {100 * (base - acc):+.2f} pts", flush=True)
    worst = max(r["drop_points"] for r in rows)
    result = {
        "machine": sysinfo.machine(),
        "n_images": len(samples),
        "rows": rows,
        "worst_drop_points": worst,
        "bar_drop_points": 0.3,
        "meets_bar": worst <= 0.3,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst INT8 drop {worst:.2f} points (bar 0.3) on {result['machine']['cpu']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
