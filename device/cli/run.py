"""`edgeloop-agent run`: the device daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from device.agent import Agent
from device.config import load_config

log = logging.getLogger("device")


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    agent = Agent(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run(stop)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the device daemon")
    r.add_argument("--config", required=True, help="agent TOML file (EDGELOOP_* environment variables override it)")
    r.set_defaults(handler=_cmd_run)
