"""`edgeloop-agent sysinfo`: system telemetry as the agent reports it."""

from __future__ import annotations

import argparse

from device.engine import sysinfo


def _cmd_sysinfo(args: argparse.Namespace) -> int:
    print(sysinfo.collect().model_dump_json(indent=2, exclude_none=not args.all))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sysinfo", help="print system telemetry as the agent reports it")
    s.add_argument("--all", action="store_true", help="also show absent sources (null)")
    s.add_argument("--json", action="store_true", help="print one JSON object (what it prints anyway)")
    s.set_defaults(handler=_cmd_sysinfo)
