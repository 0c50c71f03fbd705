"""`edgeloop keys`: release signing keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from shared.signing import generate_keypair

    out = Path(args.out_dir)
    private, public = out / f"{args.name}.key", out / f"{args.name}.pub"
    kid = generate_keypair(private, public)
    if args.json:
        print(json.dumps({"private_key": str(private), "public_key": str(public), "key_id": kid}, indent=2))
        return 0
    print(f"wrote {private} (keep it secret) and {public} (key id {kid})")
    print("devices trust the public key through `trusted_keys` in their agent.toml")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="release signing keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    g = ksub.add_parser("generate", help="make an ed25519 key pair")
    g.add_argument("--out-dir", default="keys")
    g.add_argument("--name", default="release")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(handler=_cmd_keys_generate)
