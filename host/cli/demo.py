"""`edgeloop demo`: the whole closed loop on this machine, offline.

Quiet by default: the demo prints its own lines (a line per act and the tables); the logs of the host
services go to a file it names (``-v``, before ``demo``, shows them on the terminal instead). The agents'
logs are always in ``devices/<id>/agent.log`` of the work directory.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def log_to_file(path: Path) -> None:
    """Send every log record to ``path`` instead of the terminal (the levels set by ``setup_logging`` stay)."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)


def _log_path(workdir: str | None) -> Path:
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return Path(workdir) / "demo.log"
    return Path(tempfile.gettempdir()) / f"edgeloop-demo-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _cmd_demo(args: argparse.Namespace) -> int:
    from host.demo import run_demo

    if not args.verbose:
        path = _log_path(args.workdir)
        log_to_file(path)
        print(f"logs: {path} (edgeloop -v demo shows them here)")
    return run_demo(
        Path(args.workdir) if args.workdir else None,
        keep_running=args.keep_running,
        devices=args.devices,
        http_port=args.port,
        max_accuracy_drop=args.max_accuracy_drop,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole closed loop on this machine, offline (logs to a file; -v shows them)")
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
