"""`edgeloop-agent serve MODEL.onnx`: the local inference API on one model, without the daemon."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from device.engine.runtimes import registry
from device.engine.runtimes.registry import runtime_config
from device.serving.config import InferenceConfig
from device.serving.standalone import serve_command

log = logging.getLogger("device")


def _cmd_serve(args: argparse.Namespace) -> int:
    config = InferenceConfig(
        listen=args.listen, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, telemetry=not args.no_telemetry
    )
    if not config.loopback:
        log.warning("the inference API listens on %s: anyone who can reach it can use it", config.listen)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_command(Path(args.model), config, runtime_config(args.runtime, args.threads), args.precision, stop)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    defaults = InferenceConfig()
    s = sub.add_parser("serve", help="serve an ONNX model over HTTP with dynamic batching (POST /v1/classify)")
    s.add_argument("model", help="ONNX file (an edgeloop export: it carries class names and preprocessing)")
    s.add_argument("--listen", default=defaults.listen, help=f"HOST:PORT (default {defaults.listen}, loopback)")
    s.add_argument("--runtime", choices=registry.config_types(), default=registry.AUTO)
    s.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="default: the file's own")
    s.add_argument("--threads", type=int, default=0, help="ONNX Runtime / OpenVINO threads (0: one per core)")
    s.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="dynamic batching: most requests in one batch"
    )
    s.add_argument(
        "--max-delay-ms",
        type=float,
        default=defaults.max_delay_ms,
        help="dynamic batching: longest wait for a fuller batch after the first request",
    )
    s.add_argument(
        "--no-telemetry",
        action="store_true",
        help="record no latency, counters or drift (only to measure what they cost)",
    )
    s.set_defaults(handler=_cmd_serve)
