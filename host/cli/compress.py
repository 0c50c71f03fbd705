"""`edgeloop compress`: run a compression recipe on a checkpoint.

The handler imports the pipeline when it runs, not at the top: it pulls in torch, and
`edgeloop --help` (and every fleet command) must not wait for it or need it. The names of the
built-in recipes come from a light module, so `--help` can list them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from host.factory.compress.recipes import builtin_recipes


def _cmd_compress(args: argparse.Namespace) -> int:
    from host.factory.compress.pipeline import compress
    from host.factory.compress.recipe import load_recipe

    recipe_path = Path(args.recipe)
    if not recipe_path.exists() and args.recipe in builtin_recipes():
        recipe_path = builtin_recipes()[args.recipe]
    recipe, text = load_recipe(recipe_path)
    summary = compress(recipe, text, Path(args.checkpoint), args.data, Path(args.out), val_data=args.val_data)
    print(
        json.dumps({k: summary[k] for k in ("name", "source_top1", "metrics", "params", "macs", "outputs")}, indent=2)
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="run a compression recipe on a checkpoint")
    p.add_argument(
        "--recipe", required=True, help=f"recipe TOML file or a built-in name ({', '.join(builtin_recipes())})"
    )
    p.add_argument("--checkpoint", required=True, help="the .pt checkpoint to start from")
    p.add_argument(
        "--data", required=True, help="training data; a folder or .tar.gz holding train/ and test/ means both splits"
    )
    p.add_argument("--val-data", help="labelled set for per-step top-1 (default: the test split of --data)")
    p.add_argument("--out", required=True, help="build directory for checkpoints, ONNX files and logs")
    p.add_argument("--json", action="store_true", help="print one JSON object (what it prints anyway)")
    p.set_defaults(handler=_cmd_compress)
