"""`edgeloop adapt`: adapt a model to a field from unlabelled field samples.

The handler imports the model factory when it runs, not at the top: the factory pulls in torch,
and `edgeloop --help` (and every fleet command) must not wait for it or need it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _print(r: dict[str, Any]) -> None:
    from host.table import print_table

    adabn = r["method"] == "adabn"
    if not adabn:
        d = r["estimate"]["degradation"]
        print_table(
            f"field estimate from {r['field_samples']['n_images']:,} samples ({r['estimate']['seconds']:.0f} s)",
            ["parameter", "value"],
            [(k, str(v)) for k, v in d.items() if k != "haze"],
        )
    rows = []
    for name, acc in r["accuracy"].items():
        rows.append(
            (f"{name} ({acc['n_images']:,} images)", _pct(acc["before"]), _pct(acc["adabn"]), _pct(acc["after"]))
        )
    if rows:
        print_table("top-1 (%)", ["set", "original", "AdaBN", "adapted"], rows)
    s = r["seconds"]
    if adabn:
        print(
            f"AdaBN (weight {r['adabn_weight']}) on {r['field_samples']['n_images']:,} field images: wrote "
            f"{r['onnx']} and {r['checkpoint']} (max |logit diff| {r['parity']['max_abs_diff']:.2g}); "
            f"took {s['total_s']:.0f} s"
        )
        return
    print(
        f"wrote {r['onnx']} and {r['checkpoint']} ({r['parity']['n_images']} parity images, "
        f"max |logit diff| {r['parity']['max_abs_diff']:.2g}); took {s['total_s']:.0f} s "
        f"(estimate {s['estimate_s']:.0f} s, fine-tune {s['train_s']:.0f} s, export {s['export_s']:.0f} s)"
    )


def _cmd_adapt(args: argparse.Namespace) -> int:
    from host.factory.field.adapt import AdaptSettings
    from host.factory.field.adapt_command import ADABN_WEIGHT, adabn_command, adapt_command
    from shared.errors import EdgeloopError

    if args.method == "adabn":
        extra = ["--data"] if args.data is not None else []
        extra += [f"--{k.replace('_', '-')}" for k in AdaptSettings.model_fields if getattr(args, k, None) is not None]
        if extra:
            raise EdgeloopError(f"--method adabn trains nothing: drop {', '.join(extra)}")
        weight = ADABN_WEIGHT if args.adabn_weight is None else args.adabn_weight
        r = adabn_command(Path(args.checkpoint), Path(args.field_samples), Path(args.out), weight,
                          val_data=args.val_data, field_val=args.field_val)  # fmt: skip
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            _print(r)
        return 0
    if args.data is None:
        raise EdgeloopError("--data (the labelled training set) is needed to fine-tune; --method adabn needs none")
    if args.adabn_weight is not None:
        raise EdgeloopError("--adabn-weight is for --method adabn; the fine-tune measures AdaBN with the field alone")
    overrides = {k: v for k, v in vars(args).items() if k in AdaptSettings.model_fields and v is not None}
    if args.images == 0:
        overrides["images"] = None  # 0 = every training image
    r = adapt_command(
        Path(args.checkpoint),
        Path(args.field_samples),
        args.data,
        Path(args.out),
        AdaptSettings(**overrides),
        val_data=args.val_data,
        field_val=args.field_val,
    )
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        _print(r)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a checkpoint to a field: estimate its degradation from unlabelled samples, fine-tune on "
        "the training set degraded to match, write a verified FP32 ONNX + checkpoint",
    )
    p.add_argument("checkpoint", help="the .pt checkpoint to adapt (it is also the distillation teacher)")
    p.add_argument("--field-samples", required=True, help="folder of field images, unlabelled (sub-folders ignored)")
    p.add_argument(
        "--method",
        choices=("finetune", "adabn"),
        default="finetune",
        help="finetune (default): on the training set degraded to match the field, minutes; adabn: BatchNorm "
        "statistics re-estimated on the field samples, seconds, no training set (corrects light and contrast, "
        "not lost detail)",
    )
    p.add_argument("--data", help="the labelled clean training set (ImageFolder dir or .tar.gz::sub); finetune only")
    p.add_argument(
        "--adabn-weight",
        type=float,
        help="adabn: the field images' share of each BatchNorm statistic, the rest the model's own (default 0.5)",
    )
    p.add_argument("--out", required=True, help="adapted FP32 ONNX to write (its checkpoint goes beside it as .pt)")
    p.add_argument("--val-data", help="labelled clean set: top-1 before and after (and parity images)")
    p.add_argument("--field-val", help="labelled field set, if there is one: field top-1 of original, AdaBN, adapted")
    p.add_argument("--epochs", type=int, help="passes over the training subset (default 3)")
    p.add_argument("--images", type=int, help="training images used, class-balanced (default 25000; 0: all)")
    p.add_argument("--batch-size", type=int, help="images per step, half of them degraded (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.02)")
    p.add_argument("--alpha", type=float, help="distillation weight on degraded images (default 0.7)")
    p.add_argument("--spread", type=float, help="how widely degradations vary around the estimate (default 1)")
    p.add_argument(
        "--estimate-images", type=int, help="clean images the estimator simulates the field on (default 384)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_adapt)
