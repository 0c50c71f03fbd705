"""`edgeloop simulate`: protocol-true simulated devices for fleet-scale tests."""

from __future__ import annotations

import argparse

from host.cli.common import broker_tls_args


def _cmd_simulate(args: argparse.Namespace) -> int:
    import math
    import signal
    import threading

    from host.fleet.simulate import MAX_DEVICES_PER_PROCESS, run_shard, run_sharded

    processes = args.processes or max(1, math.ceil(args.devices / MAX_DEVICES_PER_PROCESS))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if processes > 1:
        return run_sharded(args, processes, stop)
    return run_shard(args, stop)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="N protocol-true simulated devices for fleet-scale tests")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--processes", type=int, help="split the devices over processes (default: 300 per process)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL (mqtts://HOST:PORT for TLS)")
    broker_tls_args(p)
    p.add_argument(
        "--device-certs",
        help="PKI folder of `edgeloop certs`: each simulated device connects with its own certificate "
        "(devices/<id>/device.crt, issued with `edgeloop certs device <prefix>-000 --fleet <fleet>`)",
    )
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1", "auto"], default="5")
    p.add_argument("--fleet", default="sim")
    p.add_argument("--prefix", default="sim", help="device id prefix")
    p.add_argument("--p50-ms", type=float, default=2.0, help="latency model: p50 of the reference model")
    p.add_argument("--accuracy-drop", type=float, default=0.0, help="top-1 points below the release's source")
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of deploys that fail")
    p.add_argument("--respond-delay", type=float, default=0.05, help="seconds before answering a command")
    p.add_argument("--reports-per-device", type=int, default=0, help="stream this many telemetry reports each")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between streamed reports")
    p.add_argument("--stream-when", help="wait for this file to exist before streaming (orchestration)")
    p.add_argument("--exit-after-stream", action="store_true", help="stop once the stream is acknowledged")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(handler=_cmd_simulate)
