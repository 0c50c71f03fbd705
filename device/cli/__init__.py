"""`edgeloop-agent`: the device command line, one module per command.

Each module of ``COMMANDS`` adds its sub-parser with ``register``. Never imports torch: everything
here runs on a Jetson with only the ``device`` extra installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from device.cli import bench, calibrate, check_config, loadgen, run, selftest, serve, sysinfo
from device.cli.bench import bench_command
from shared.errors import EdgeloopError
from shared.version import add_version_option

# the help text of `edgeloop-agent --help`, as it has always read
DESCRIPTION = (
    "`edgeloop-agent`: the device daemon (`run`) and its local tools (`selftest`, `bench`, `serve`, `loadgen`, "
    "`calibrate`, `sysinfo`, `check-config`).\n\n"
    "Never imports torch: everything here runs on a Jetson with only the ``device`` extra installed.\n"
)
Handler = Callable[[argparse.Namespace], int]

# the order of `edgeloop-agent --help`
COMMANDS: list[ModuleType] = [run, check_config, selftest, bench, serve, loadgen, calibrate, sysinfo]

__all__ = ["COMMANDS", "bench_command", "build_parser", "main"]


def setup_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("device", "shared"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    if verbose >= 2:
        logging.getLogger().setLevel(logging.DEBUG)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeloop-agent", description=DESCRIPTION)
    add_version_option(p)
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EdgeloopError as e:
        print(f"edgeloop-agent: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
