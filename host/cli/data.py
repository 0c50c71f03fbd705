"""`edgeloop data`: dataset tools (CIFAR import, field-shift copies, drift references).

Handlers import their modules when they run, not at the top: they load numpy and OpenCV, and
`edgeloop --help` stays instant without them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_import_cifar(args: argparse.Namespace) -> int:
    from shared.datasets import import_cifar_python

    counts = import_cifar_python(args.archive, args.out)
    if args.json:
        print(json.dumps({"out": args.out, "train": counts["train"], "test": counts["test"]}, indent=2))
    else:
        print(f"wrote {counts['train']:,} training and {counts['test']:,} test images under {args.out}")
    return 0


def _cmd_shift(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from host.factory.field.shift import shift_dataset
    from shared import datasets

    total = len(datasets.list_samples(args.src))
    with tqdm(total=total, desc=f"shift ({args.preset})", unit="img", disable=None) as bar:
        record = shift_dataset(args.src, Path(args.out), args.preset, args.seed, progress=bar.update)
    print(json.dumps(record, indent=2))
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    from device.engine import reference

    ref = reference.reference_of(Path(args.model), args.data, limit=args.limit)
    written = [Path(args.model), *(Path(p) for p in args.into or [])]
    for path in written:
        reference.stamp(path, ref)
        if not args.json:
            print(f"wrote the drift reference ({ref.source}) into {path}")
    if args.json:
        print(json.dumps({"written": [str(p) for p in written], "reference": ref.model_dump(mode="json")}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from host.factory.field.presets import PRESET_NAMES  # names only: no numpy, no OpenCV

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("import-cifar", help="convert cifar-10-python.tar.gz to PNG class folders")
    q.add_argument("archive")
    q.add_argument("--out", required=True)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(handler=_cmd_import_cifar)
    s = dsub.add_parser("shift", help="a seeded copy of a labelled set as the field would see it (PNG)")
    s.add_argument("src", help="labelled ImageFolder dir or .tar.gz[::subdir]")
    s.add_argument("--out", required=True, help="new folder for the shifted copy (same class folders)")
    s.add_argument("--preset", required=True, choices=PRESET_NAMES, help="which field shift")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same copy")
    s.add_argument("--json", action="store_true", help="print one JSON object (what it prints anyway)")
    s.set_defaults(handler=_cmd_shift)
    r = dsub.add_parser("reference", help="write a model's drift reference into its ONNX metadata")
    r.add_argument("model", help="the FP32 ONNX the reference is measured on")
    r.add_argument("--data", help="held-out labelled images (default: the golden set)")
    r.add_argument("--limit", type=int, default=2000, help="at most this many images (class-balanced)")
    r.add_argument("--into", nargs="+", help="also write the same reference into these ONNX files (e.g. INT8, FP16)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(handler=_cmd_reference)
