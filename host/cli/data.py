"""`edgeloop data`: dataset tools.

The handler imports ``shared.datasets`` when it runs, not at the top: it loads numpy, and
`edgeloop --help` stays instant without it.
"""

from __future__ import annotations

import argparse


def _cmd_import_cifar(args: argparse.Namespace) -> int:
    from shared.datasets import import_cifar_python

    counts = import_cifar_python(args.archive, args.out)
    print(f"wrote {counts['train']:,} training and {counts['test']:,} test images under {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("import-cifar", help="convert cifar-10-python.tar.gz to PNG class folders")
    q.add_argument("archive")
    q.add_argument("--out", required=True)
    q.set_defaults(handler=_cmd_import_cifar)
