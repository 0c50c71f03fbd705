"""What several command groups share: the `--server` option and fraction parsing."""

from __future__ import annotations

import argparse
import os

from shared.errors import EdgeloopError

DEFAULT_SERVER = "http://127.0.0.1:8080"


def server_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("EDGELOOP_SERVER", DEFAULT_SERVER),
        help="URL of `edgeloop serve` (env EDGELOOP_SERVER)",
    )


def fraction(text: str) -> float:
    """'0.1' or '10%' -> 0.1."""
    t = text.strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise EdgeloopError(f"{text!r} must be a fraction (0.1) or a percentage (10%)") from None
