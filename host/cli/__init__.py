"""`edgeloop`: the host command line, one module per command group.

Each module of ``COMMANDS`` adds its sub-parser with ``register``. Handlers import their heavy
modules (torch, the model factory, the fleet server) when they run, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from host.cli import (
    adapt,
    certs,
    compress,
    data,
    demo,
    evaluate,
    export,
    fleet,
    keys,
    recalibrate,
    release,
    report,
    rollout,
    serve,
    simulate,
    train,
)
from shared.errors import EdgeloopError
from shared.version import add_version_option

DESCRIPTION = (
    "Train and compress CIFAR classifiers, release them to a fleet of Jetson devices, and roll them out "
    "gated on what the devices measure."
)
Handler = Callable[[argparse.Namespace], int]

# the order of `edgeloop --help`: make a model, then run the fleet
COMMANDS: list[ModuleType] = [
    train,
    evaluate,
    export,
    data,
    compress,
    adapt,
    report,
    keys,
    certs,
    release,
    serve,
    rollout,
    fleet,
    recalibrate,
    simulate,
    demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeloop", description=DESCRIPTION)
    add_version_option(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def setup_logging(verbose: int) -> None:
    """Our own loggers at INFO (DEBUG with -v); third-party loggers at WARNING (INFO with -vv)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = logging.DEBUG if verbose >= 1 else logging.INFO
    for name in ("host", "device", "shared", "edgeloop"):
        logging.getLogger(name).setLevel(ours)
    logging.getLogger().setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    # torch's exporter warns about torchvision ops on every export; nothing a user can act on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EdgeloopError as e:
        print(f"edgeloop: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeloop: interrupted", file=sys.stderr)
        return 130
