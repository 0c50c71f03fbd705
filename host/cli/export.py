"""`edgeloop export`: a checkpoint to verified ONNX.

The handler imports the model factory when it runs, not at the top: the factory pulls in torch,
and `edgeloop --help` (and every fleet command) must not wait for it or need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def _cmd_export(args: argparse.Namespace) -> int:
    from host.factory.export import export_command

    parity = export_command(
        Path(args.checkpoint),
        Path(args.out),
        data=args.data,
        atol=args.atol,
        opset=args.opset,
        fold=not args.no_fold_bn,
        parity_limit=args.parity_images,
    )
    if args.json:
        result = {"checkpoint": args.checkpoint, "out": args.out, "parity": dataclasses.asdict(parity)}
        print(json.dumps(result, indent=2))
    else:
        print(f"wrote {args.out}: {parity}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to verified ONNX")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--data", help="images for the parity check (default: the bundled golden set)")
    p.add_argument("--atol", type=float, default=1e-3, help="max abs logit difference allowed")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization nodes")
    p.add_argument("--parity-images", type=int, default=1000, help="how many images of --data the parity check uses")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_export)
