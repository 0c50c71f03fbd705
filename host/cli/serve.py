"""`edgeloop serve`: the host process (artifacts, ingest, rollouts, REST API, dashboard)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from host.fleet.server import HostServer, ServeConfig

    cfg = ServeConfig(
        releases=Path(args.releases),
        store_url=args.store,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        broker_url=args.broker,
        broker_protocol=args.mqtt_protocol,
        embedded_broker=args.embedded_broker,
        embedded_broker_port=args.embedded_broker_port,
        ingest_workers=args.ingest_workers,
        broker_username=os.environ.get("EDGELOOP_BROKER_USERNAME"),
        broker_password=os.environ.get("EDGELOOP_BROKER_PASSWORD"),
        command_key=Path(args.command_key) if args.command_key else None,
    )
    server = HostServer(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(
        f"edgeloop serve: dashboard {cfg.base_url}  broker {cfg.broker_url}  store {server.store.dialect}", flush=True
    )
    stop.wait()
    server.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="artifact server + ingest + rollout controller + REST API + dashboard")
    p.add_argument("--releases", default="releases", help="artifact store directory (from `release create`)")
    p.add_argument("--store", default="edgeloop.sqlite", help="SQLite path or postgresql://user:pw@host/db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", help="URL devices use to reach this server (default http://HOST:PORT/)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL")
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1", "auto"], default="5")
    p.add_argument("--embedded-broker", action="store_true", help="start an embedded MQTT broker (amqtt, 3.1.1)")
    p.add_argument("--embedded-broker-port", type=int, default=1883)
    p.add_argument("--ingest-workers", type=int, default=1, help="workers sharing the report subscription (MQTT 5)")
    p.add_argument(
        "--command-key",
        default=os.environ.get("EDGELOOP_COMMAND_KEY"),
        help="ed25519 private key (PEM, `edgeloop keys generate`) that signs every command; devices trust its "
        "public key (command_keys, else trusted_keys) and refuse unsigned commands (env EDGELOOP_COMMAND_KEY)",
    )
    p.set_defaults(handler=_cmd_serve)
