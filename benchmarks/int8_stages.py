"""Where INT8 time goes on ONNX Runtime's CPU provider: per-layer profiles grouped by resolution.

    python benchmarks/int8_stages.py [--threads 1] [--batch 256] [MODEL.onnx ...]

For each model (default: the zoo's baseline, its INT8 form, the slimmed model and its INT8 form) it
builds an ONNX Runtime engine, runs ORT's profiler (``Runtime.profile_layers``, the same as
``edgeloop-agent bench --profile``) and sums the convolution time by output resolution: 32x32
(stage 1), 16x16 (stage 2) and 8x8 (stage 3); everything else is "other". It prints one table and
writes benchmarks/int8-stages-result.json. Layer times come from the profiler (a little slower than
unprofiled runs); compare them within this run only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine.runtimes import open_onnx, runtime_config
from device.engine.runtimes.base import LayerTime
from device.engine.sysinfo import machine

ZOO = REPO / "host" / "zoo"
DEFAULT = ["resnet20.onnx", "resnet20-int8.onnx", "resnet20-slim.onnx", "resnet20-slim-int8.onnx"]


def _resolution(shape: tuple[int, ...] | None) -> int | None:
    """Spatial side of a 4-D activation, NCHW (FP32, NCHWc) or NHWC (ORT's INT8 layout)."""
    if shape is None or len(shape) != 4:
        return None
    if shape[1] == shape[2]:  # NHWC: N, H, W, C
        return shape[1]
    return shape[2] if shape[2] == shape[3] else None


def stages(layers: list[LayerTime]) -> dict[str, Any]:
    conv: dict[int, float] = {}
    counts: dict[int, int] = {}
    other = 0.0
    for x in layers:
        side = _resolution(x.output_shape)
        if "Conv" in x.op and side is not None:
            conv[side] = conv.get(side, 0.0) + x.ms
            counts[side] = counts.get(side, 0) + 1
        else:
            other += x.ms
    total = sum(conv.values()) + other
    return {
        "total_ms": total,
        "conv_ms_by_resolution": {f"{k}x{k}": v for k, v in sorted(conv.items(), reverse=True)},
        "convs_by_resolution": {f"{k}x{k}": v for k, v in sorted(counts.items(), reverse=True)},
        "other_ms": other,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="ONNX files (default: four zoo models)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "int8-stages-result.json"))
    args = ap.parse_args()
    models = [Path(m) for m in args.models] or [ZOO / m for m in DEFAULT]
    results: dict[str, Any] = {}
    for path in models:
        with open_onnx(runtime_config("onnxruntime", threads=args.threads), path) as rt:
            results[path.name] = stages(rt.profile_layers(batch=args.batch, runs=args.runs))
    sides = sorted(
        {k for r in results.values() for k in r["conv_ms_by_resolution"]}, key=lambda s: -int(s.split("x")[0])
    )
    print(f"{'model':28s} {'total ms':>9s} " + " ".join(f"{'conv ' + s:>18s}" for s in sides) + f" {'other':>7s}")
    for name, r in results.items():
        cells = []
        for s in sides:
            ms, n = r["conv_ms_by_resolution"].get(s, 0.0), r["convs_by_resolution"].get(s, 0)
            cells.append(f"{ms:6.1f} ({n:2d}) {100 * ms / r['total_ms']:3.0f}%".rjust(18))
        print(f"{name:28s} {r['total_ms']:9.1f} " + " ".join(cells) + f" {r['other_ms']:7.1f}")
    out = {"machine": machine(), "threads": args.threads, "batch": args.batch, "runs": args.runs, "models": results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"ms per batch of {args.batch} (ORT profiler), {args.threads} thread(s); (n) = convs at that resolution")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
