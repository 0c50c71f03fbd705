"""`edgeloop report`: compare every ONNX variant of a build directory.

The handler imports the model factory when it runs, not at the top: the factory pulls in torch,
and `edgeloop --help` (and every fleet command) must not wait for it or need it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.engine.runtimes import registry


def _cmd_report(args: argparse.Namespace) -> int:
    from host.factory.report import build_report, print_report, write_report

    build_dir = Path(args.build_dir)
    report = build_report(
        build_dir,
        args.data,
        Path(args.baseline),
        Path(args.torch_baseline) if args.torch_baseline else None,
        threads=args.threads,
        limit=args.limit,
        rounds=args.rounds,
        runtimes=args.runtime,
    )
    json_path = Path(args.json_out or build_dir / "report.json")
    png_path = Path(args.png or json_path.with_suffix(".png"))
    write_report(report, json_path, png_path)
    if args.json:  # the object written to --json-out
        print(json.dumps(report, indent=2))
        return 0
    print_report(report)
    print(f"wrote {json_path} and {png_path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="compare every ONNX variant in a build directory (table, JSON, PNG)")
    p.add_argument("build_dir")
    p.add_argument("--data", required=True, help="labelled evaluation set (e.g. the 10,000-image test split)")
    p.add_argument("--baseline", default="host/zoo/resnet20.onnx", help="FP32 ONNX the speed-ups refer to")
    p.add_argument("--torch-baseline", default="host/zoo/resnet20.pt", help="checkpoint for PyTorch eager FP32")
    p.add_argument(
        "--runtime",
        action="append",
        choices=registry.names(),
        help="a runtime to run every variant on (repeatable; default: every backend installed here)",
    )
    p.add_argument("--threads", type=int, default=0, help="runtime and torch threads (0 = all cores)")
    p.add_argument("--limit", type=int, help="evaluate on a class-balanced subset")
    p.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (median is reported)")
    p.add_argument("--json-out", help="default: BUILD_DIR/report.json")
    p.add_argument("--png", help="default: next to the JSON")
    p.add_argument("--json", action="store_true", help="print the report's JSON object (the one --json-out holds)")
    p.set_defaults(handler=_cmd_report)
