"""`edgeloop evaluate`: accuracy, size and CPU speed of a checkpoint or ONNX file.

The handler imports the model factory (and the table printer) when it runs, not at the top: the
factory pulls in torch, and `edgeloop --help` (and every fleet command) must not wait for it or need it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.engine.runtimes import registry


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from host.factory.evaluate import evaluate_command
    from host.table import print_table

    r = evaluate_command(
        Path(args.model),
        args.data,
        limit=args.limit,
        threads=args.threads,
        iterations=args.iterations,
        runtime=args.runtime,
    )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    lat = r["latency_ms"]
    print_table(
        f"{Path(args.model).name} on {r['n_images']:,} images",
        ["metric", "value"],
        [
            ("top-1 (%)", 100 * r["top1"]),
            ("params", r["params"]),
            ("MACs", r["macs"]),
            ("latency p50 / p99, batch 1 (ms)", f"{lat['p50']:.3f} / {lat['p99']:.3f}"),
            (f"throughput, batch {r['throughput_batch']} (img/s)", r["throughput_ips"]),
            ("runtime", r["runtime"]),
        ],
    )
    print_table("per-class top-1 (%)", ["class", "top-1"], [(c, 100 * v) for c, v in r["per_class"].items()])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, size and CPU speed of a .pt checkpoint or .onnx file")
    # every registered backend (the device's own runtimes); the ONNX file's top-1 and speed are measured on it
    p.add_argument("--runtime", choices=registry.names(), default="onnxruntime", help="default: onnxruntime")
    p.add_argument("model", help="a .pt checkpoint or an .onnx file")
    p.add_argument("--data", required=True, help="labelled ImageFolder dir or .tar.gz[::subdir]")
    p.add_argument("--limit", type=int, help="evaluate on a class-balanced subset of this many images")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0 = all cores)")
    p.add_argument("--iterations", type=int, default=200, help="timed batch-1 runs for latency")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_evaluate)
