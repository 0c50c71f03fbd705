"""`edgeloop train`: train a CIFAR classifier from scratch (or on from a checkpoint).

The handler imports the model factory when it runs, not at the top: the factory pulls in torch,
and `edgeloop --help` (and every fleet command) must not wait for it or need it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from host.factory.train import TrainConfig, train_command

    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields and v is not None}
    cfg = TrainConfig(**overrides)
    info = train_command(
        args.arch,
        args.data,
        Path(args.out),
        cfg,
        val_data=args.val_data,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        resume=args.resume,
        init=Path(args.init) if args.init else None,
        teacher=Path(args.teacher) if args.teacher else None,
        kd_temperature=args.kd_temperature,
        kd_alpha=args.kd_alpha,
    )
    print(json.dumps({k: info[k] for k in ("name", "metrics", "params", "macs", "wall_time_s")}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CIFAR classifier from scratch")
    p.add_argument("--arch", default="resnet20", help="architecture (resnet20, resnet32, resnet56)")
    p.add_argument("--data", required=True, help="training ImageFolder dir or .tar.gz[::subdir]")
    p.add_argument("--val-data", help="labelled set evaluated after every epoch (e.g. the test split)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt); the model card goes beside it")
    p.add_argument("--work-dir", help="where resumable state is kept (default .edgeloop/runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last saved epoch")
    p.add_argument("--init", help="start from this checkpoint's weights (e.g. a second cosine cycle)")
    p.add_argument("--teacher", help="distil from this checkpoint (knowledge distillation instead of plain CE)")
    p.add_argument("--kd-temperature", type=float, default=4.0, help="distillation temperature (with --teacher)")
    p.add_argument("--kd-alpha", type=float, default=0.9, help="weight of the distillation term (with --teacher)")
    p.add_argument("--swa-start", type=int, help="average the weights of every epoch after this one (SWA)")
    p.add_argument("--swa-lr", type=float, help="constant learning rate while averaging (with --swa-start)")
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--cutout", type=int, help="Cutout augmentation: side of the blanked square (0: off)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--schedule", choices=["cosine", "onecycle", "constant"])
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast (default: on only where the CPU has AMX; --no-bf16 forces FP32)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (what it prints anyway)")
    p.set_defaults(handler=_cmd_train)
