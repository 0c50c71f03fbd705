"""`edgeloop fleet`: fleet views, through the REST API of `edgeloop serve`."""

from __future__ import annotations

import argparse
import json

from host.cli.common import server_arg


def _cmd_fleet_status(args: argparse.Namespace) -> int:
    from host.fleet.client import ApiClient
    from host.table import print_table

    devices = ApiClient(args.server).get("/api/v1/fleet" + (f"?fleet={args.fleet}" if args.fleet else ""))
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    print_table(
        "fleet",
        ["fleet", "device", "state", "release", "p50 ms", "p99 ms", "top-1 %", "runtime", "GPU/CPU"],
        [
            (
                d["fleet"],
                d["device_id"],
                d["state"],
                d["release"],
                d["p50_ms"],
                d["p99_ms"],
                100 * d["top1"] if d["top1"] is not None else None,
                d["runtime"],
                d["accelerator"] if d["gpu"] else "CPU",
            )
            for d in devices
        ],
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="fleet views")
    fsub = p.add_subparsers(dest="fleet_command", required=True)
    s = fsub.add_parser("status", help="one line per device")
    s.add_argument("--fleet")
    s.add_argument("--json", action="store_true")
    server_arg(s)
    s.set_defaults(handler=_cmd_fleet_status)
