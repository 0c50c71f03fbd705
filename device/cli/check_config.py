"""`edgeloop-agent check-config`: validate an agent config and print every field (secrets hidden)."""

from __future__ import annotations

import argparse

from device.config import load_config


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(config.model_dump_json(indent=2, exclude={"broker": {"password"}}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("check-config", help="validate an agent config and print it (secrets hidden)")
    c.add_argument("--config", required=True)
    c.add_argument("--json", action="store_true", help="print one JSON object (what it prints anyway)")
    c.set_defaults(handler=_cmd_check_config)
