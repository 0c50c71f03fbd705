"""What several command groups share: the `--server` and `--token-file` options (and the client they make),
the broker TLS options, and fraction parsing."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import EdgeloopError

if TYPE_CHECKING:
    from host.fleet.client import ApiClient
    from host.fleet.tls import BrokerTls

DEFAULT_SERVER = "http://127.0.0.1:8080"


def server_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("EDGELOOP_SERVER", DEFAULT_SERVER),
        help="URL of `edgeloop serve` (env EDGELOOP_SERVER)",
    )
    p.add_argument(
        "--token-file",
        default=os.environ.get("EDGELOOP_API_TOKEN_FILE"),
        help="file holding the API token of `edgeloop serve` (env EDGELOOP_API_TOKEN_FILE; or the token itself "
        "in EDGELOOP_API_TOKEN)",
    )


def api_token(args: argparse.Namespace) -> str | None:
    """--token-file, else EDGELOOP_API_TOKEN, else none (a server on loopback may run without one)."""
    from host.fleet.tokens import check_token, read_token

    if getattr(args, "token_file", None):
        return read_token(Path(args.token_file))
    env = os.environ.get("EDGELOOP_API_TOKEN", "").strip()
    return check_token(env, "EDGELOOP_API_TOKEN") if env else None


def api_client(args: argparse.Namespace) -> ApiClient:
    from host.fleet.client import ApiClient

    return ApiClient(args.server, token=api_token(args))


def broker_tls_args(p: argparse.ArgumentParser) -> None:
    """--broker-ca/--broker-cert/--broker-key (env EDGELOOP_BROKER_CA/_CERT/_KEY); they need an mqtts:// URL."""
    p.add_argument("--broker-ca", help="CA that signed the broker's certificate (default: the system CAs)")
    p.add_argument("--broker-cert", help="client certificate for mutual TLS (from `edgeloop certs`)")
    p.add_argument("--broker-key", help="the client certificate's private key")


def broker_tls(args: argparse.Namespace) -> BrokerTls:
    from host.fleet.tls import BrokerTls

    return BrokerTls.from_env(args.broker_ca, args.broker_cert, args.broker_key)


def fraction(text: str) -> float:
    """'0.1' or '10%' -> 0.1."""
    t = text.strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise EdgeloopError(f"{text!r} must be a fraction (0.1) or a percentage (10%)") from None
