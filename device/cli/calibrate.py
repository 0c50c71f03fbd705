"""`edgeloop-agent calibrate`: quantize an FP32 ONNX to the INT8 form this machine runs best, and verify it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.engine.calibration.command import calibrate_command
from device.engine.calibration.quantize import METHODS
from device.engine.runtimes import registry
from device.engine.runtimes.registry import runtime_config


def _cmd_calibrate(args: argparse.Namespace) -> int:
    r = calibrate_command(
        Path(args.model),
        Path(args.calib_dir),
        Path(args.out),
        runtime_config(args.runtime, args.threads),
        args.method,
        args.images,
        Path(args.verify_dir) if args.verify_dir else None,
        args.max_drop,
    )
    ok = bool(r["verification"].get("passed", True))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if ok else 1
    f = r["form"]
    print(f"wrote        {r['out']}  ({r['runtime']}, {r['accelerator']})")
    print(f"form         {f['name']}: {f['activations']} activations, {f['weights']} weights, {f['bias']} bias")
    print(f"why          {r['why']}")
    print(
        f"calibrated   {r['calibration_images']} images ({r['method']}) in {r['calibration_s']:.1f} s; "
        f"{r['held_out_images']} held out, {r['skipped_constant']} constant skipped"
    )
    for where, v in r["verification"].items():
        if isinstance(v, dict):
            print(f"verified     {where}: {'ok' if v['passed'] else 'FAILED'} ({v['reason']})")
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("calibrate", help="INT8 for this machine: choose the Q/DQ form, calibrate, verify vs FP32")
    c.add_argument("model", help="the release's FP32 ONNX")
    c.add_argument("--calib-dir", required=True, help="folder of field images (sub-folders are fine, labels unused)")
    c.add_argument("--out", required=True, help="INT8 ONNX to write")
    c.add_argument("--method", choices=METHODS, default="percentile", help="how activation ranges are calibrated")
    c.add_argument("--images", type=int, default=1024, help="calibrate on at most this many (the rest verify)")
    c.add_argument("--verify-dir", help="labelled ImageFolder: also check the accuracy drop against FP32")
    c.add_argument("--max-drop", type=float, default=1.0, help="largest accuracy drop in points that verifies")
    c.add_argument("--runtime", choices=registry.config_types(), default=registry.AUTO)
    c.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per core)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(handler=_cmd_calibrate)
