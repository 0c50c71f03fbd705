"""`edgeloop demo`: the whole closed loop on this machine, offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    from host.demo import run_demo

    return run_demo(
        Path(args.workdir) if args.workdir else None,
        keep_running=args.keep_running,
        devices=args.devices,
        http_port=args.port,
        max_accuracy_drop=args.max_accuracy_drop,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole closed loop on this machine, offline")
    p.add_argument("--keep-running", action="store_true", help="leave the dashboard up afterwards")
    p.add_argument("--workdir", help="keep everything here (default: a temporary directory)")
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--port", type=int, help="dashboard port (default: a free one)")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=2.0,
        help="gate in top-1 points; the demo devices measure on 200 golden images (0.5 pt each)",
    )
    p.set_defaults(handler=_cmd_demo)
