"""`edgeloop keys`: release signing keys."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from shared.signing import generate_keypair

    out = Path(args.out_dir)
    kid = generate_keypair(out / f"{args.name}.key", out / f"{args.name}.pub")
    print(f"wrote {out / (args.name + '.key')} (keep it secret) and {out / (args.name + '.pub')} (key id {kid})")
    print("devices trust the public key through `trusted_keys` in their agent.toml")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="release signing keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    g = ksub.add_parser("generate", help="make an ed25519 key pair")
    g.add_argument("--out-dir", default="keys")
    g.add_argument("--name", default="release")
    g.set_defaults(handler=_cmd_keys_generate)
