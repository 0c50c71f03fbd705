"""`edgeloop serve`: the host process (artifacts, ingest, rollouts, REST API, dashboard)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from host.cli.common import broker_tls, broker_tls_args


def _api_token(args: argparse.Namespace) -> tuple[str | None, str]:
    """The operator token and how serve got it (printed at start-up; never the token itself)."""
    from host.fleet import tokens

    path = args.api_token_file or os.environ.get("EDGELOOP_API_TOKEN_FILE")
    if path:
        token, created = tokens.load_or_create_token(Path(path))
        return token, f"{'new token written to' if created else 'token from'} {path}"
    env = os.environ.get("EDGELOOP_API_TOKEN", "").strip()
    if env:
        return tokens.check_token(env, "EDGELOOP_API_TOKEN"), "token from EDGELOOP_API_TOKEN"
    return None, "OPEN, no token (loopback only; --api-token-file FILE to require one)"


def _upload_secret(args: argparse.Namespace, token: str | None) -> tuple[bytes | None, str]:
    from host.fleet import tokens

    path = args.upload_secret_file or os.environ.get("EDGELOOP_UPLOAD_SECRET_FILE")
    if path:
        return tokens.load_upload_secret(Path(path)), "device uploads need their upload token"
    if token is None:
        return None, "device uploads need no token (open server)"
    return None, "no device uploads (no --upload-secret-file)"


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from host.fleet.server import HostServer, ServeConfig

    token, token_note = _api_token(args)
    secret, upload_note = _upload_secret(args, token)
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
        broker_tls=broker_tls(args),
        api_token=token,
        upload_secret=secret,
        http_cert=Path(args.http_cert) if args.http_cert else None,
        http_key=Path(args.http_key) if args.http_key else None,
        replica_id=args.replica_id,
        lease_s=args.lease_seconds,
    )
    server = HostServer(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(
        f"edgeloop serve: dashboard {cfg.base_url}  broker {cfg.broker_url}  store {server.store.dialect}", flush=True
    )
    print(f"edgeloop serve: REST API {token_note}; {upload_note}", flush=True)
    stop.wait()
    server.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="artifact server + ingest + rollout controller + REST API + dashboard")
    p.add_argument("--releases", default="releases", help="artifact store directory (from `release create`)")
    p.add_argument("--store", default="edgeloop.sqlite", help="SQLite path or postgresql://user:pw@host/db")
    p.add_argument("--host", default="127.0.0.1", help="bind address (not loopback: the API needs a token)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", help="URL devices use to reach this server (default http://HOST:PORT/)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL (mqtts://HOST:PORT for TLS)")
    broker_tls_args(p)
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
    p.add_argument(
        "--api-token-file",
        help="the REST API's token (written there, 0600, when the file does not exist; env "
        "EDGELOOP_API_TOKEN_FILE, or the token itself in EDGELOOP_API_TOKEN). Without one the API is open, "
        "which only a loopback bind allows",
    )
    p.add_argument(
        "--upload-secret-file",
        help="key of the devices' upload tokens (upload-secret from `edgeloop certs init`; env "
        "EDGELOOP_UPLOAD_SECRET_FILE)",
    )
    p.add_argument("--http-cert", help="serve HTTPS with this certificate (chain) ...")
    p.add_argument("--http-key", help="... and its key")
    p.add_argument(
        "--replica-id",
        default=os.environ.get("EDGELOOP_REPLICA_ID"),
        help="this replica's id when several `serve` share one PostgreSQL store and broker (env EDGELOOP_REPLICA_ID; "
        "default: the host name, so two replicas on one machine need their own)",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=float(os.environ.get("EDGELOOP_LEASE_SECONDS", "15")),
        help="how long the controller lease and the ingest slots outlive a replica that stopped renewing them: "
        "another replica takes over within this (env EDGELOOP_LEASE_SECONDS; default 15)",
    )
    p.set_defaults(handler=_cmd_serve)
