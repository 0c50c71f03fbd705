"""`edgeloop`: the host command line. Heavy imports happen inside each command, so --help is instant."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.errors import EdgeloopError

log = logging.getLogger("edgeloop")

Handler = Callable[[argparse.Namespace], int]


def _cmd_train(args: argparse.Namespace) -> int:
    from host.train import TrainConfig, train_command

    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields and v is not None}
    cfg = TrainConfig(**overrides)
    info = train_command(args.arch, args.data, Path(args.out), cfg, val_data=args.val_data,
                         work_dir=Path(args.work_dir) if args.work_dir else None, resume=args.resume)  # fmt: skip
    print(json.dumps({k: info[k] for k in ("name", "metrics", "params", "macs", "wall_time_s")}, indent=2))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train a CIFAR classifier from scratch")
    p.add_argument("--arch", default="resnet20", help="architecture (resnet20, resnet32, resnet56)")
    p.add_argument("--data", required=True, help="training ImageFolder dir or .tar.gz[::subdir]")
    p.add_argument("--val-data", help="labelled set evaluated after every epoch (e.g. the test split)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt); the model card goes beside it")
    p.add_argument("--work-dir", help="where resumable state is kept (default .edgeloop/runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last saved epoch")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--schedule", choices=["cosine", "onecycle", "constant"])
    p.add_argument("--seed", type=int)
    p.add_argument("--no-bf16", dest="bf16", action="store_false", default=None,
                   help="train in FP32 instead of bfloat16 autocast")  # fmt: skip
    p.set_defaults(handler=_cmd_train)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from host.evaluate import evaluate_command
    from host.table import print_table

    r = evaluate_command(Path(args.model), args.data, limit=args.limit, threads=args.threads,
                         iterations=args.iterations)  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    lat = r["latency_ms"]
    print_table(f"{Path(args.model).name} on {r['n_images']:,} images", ["metric", "value"], [
        ("top-1 (%)", 100 * r["top1"]),
        ("params", r["params"]),
        ("MACs", r["macs"]),
        ("latency p50 / p99, batch 1 (ms)", f"{lat['p50']:.3f} / {lat['p99']:.3f}"),
        (f"throughput, batch {r['throughput_batch']} (img/s)", r["throughput_ips"]),
        ("runtime", r["runtime"]),
    ])  # fmt: skip
    print_table("per-class top-1 (%)", ["class", "top-1"], [(c, 100 * v) for c, v in r["per_class"].items()])
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("evaluate", help="accuracy, size and CPU speed of a .pt checkpoint or .onnx file")
    p.add_argument("model", help="a .pt checkpoint or an .onnx file")
    p.add_argument("--data", required=True, help="labelled ImageFolder dir or .tar.gz[::subdir]")
    p.add_argument("--limit", type=int, help="evaluate on a class-balanced subset of this many images")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    p.add_argument("--iterations", type=int, default=200, help="timed batch-1 runs for latency")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_export(args: argparse.Namespace) -> int:
    from host.export import export_command

    parity = export_command(Path(args.checkpoint), Path(args.out), data=args.data, atol=args.atol,
                            opset=args.opset, fold=not args.no_fold_bn)  # fmt: skip
    print(f"wrote {args.out}: {parity}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="export a checkpoint to verified ONNX")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--data", help="images for the parity check (default: the bundled golden set)")
    p.add_argument("--atol", type=float, default=1e-3, help="max abs logit difference allowed")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization nodes")
    p.set_defaults(handler=_cmd_export)


def _cmd_import_cifar(args: argparse.Namespace) -> int:
    from shared.datasets import import_cifar_python

    counts = import_cifar_python(args.archive, args.out)
    print(f"wrote {counts['train']:,} training and {counts['test']:,} test images under {args.out}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("import-cifar", help="convert cifar-10-python.tar.gz to PNG class folders")
    q.add_argument("archive")
    q.add_argument("--out", required=True)
    q.set_defaults(handler=_cmd_import_cifar)


def _cmd_compress(args: argparse.Namespace) -> int:
    from host.compress.pipeline import compress
    from host.compress.recipe import builtin_recipes, load_recipe

    recipe_path = Path(args.recipe)
    if not recipe_path.exists() and args.recipe in builtin_recipes():
        recipe_path = builtin_recipes()[args.recipe]
    recipe, text = load_recipe(recipe_path)
    summary = compress(recipe, text, Path(args.checkpoint), args.data, Path(args.out), val_data=args.val_data)
    print(json.dumps({k: summary[k] for k in ("name", "source_top1", "metrics", "params", "macs", "outputs")}, indent=2))
    return 0


def _add_compress(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from host.compress.recipe import builtin_recipes

    p = sub.add_parser("compress", help="run a compression recipe on a checkpoint")
    p.add_argument("--recipe", required=True,
                   help=f"recipe TOML file or a built-in name ({', '.join(builtin_recipes())})")  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="the .pt checkpoint to start from")
    p.add_argument("--data", required=True,
                   help="training data; a folder or .tar.gz holding train/ and test/ means both splits")  # fmt: skip
    p.add_argument("--val-data", help="labelled set for per-step top-1 (default: the test split of --data)")
    p.add_argument("--out", required=True, help="build directory for checkpoints, ONNX files and logs")
    p.set_defaults(handler=_cmd_compress)


def _cmd_report(args: argparse.Namespace) -> int:
    from host.report import build_report, print_report, write_report

    build_dir = Path(args.build_dir)
    report = build_report(build_dir, args.data, Path(args.baseline), Path(args.torch_baseline) if args.torch_baseline else None,
                          threads=args.threads, limit=args.limit, rounds=args.rounds)  # fmt: skip
    json_path = Path(args.json_out or build_dir / "report.json")
    png_path = Path(args.png or json_path.with_suffix(".png"))
    write_report(report, json_path, png_path)
    print_report(report)
    print(f"wrote {json_path} and {png_path}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="compare every ONNX variant in a build directory (table, JSON, PNG)")
    p.add_argument("build_dir")
    p.add_argument("--data", required=True, help="labelled evaluation set (e.g. the 10,000-image test split)")
    p.add_argument("--baseline", default="host/zoo/resnet20.onnx", help="FP32 ONNX the speed-ups refer to")
    p.add_argument("--torch-baseline", default="host/zoo/resnet20.pt", help="checkpoint for PyTorch eager FP32")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime / torch threads (0 = all cores)")
    p.add_argument("--limit", type=int, help="evaluate on a class-balanced subset")
    p.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (median is reported)")
    p.add_argument("--json-out", help="default: BUILD_DIR/report.json")
    p.add_argument("--png", help="default: next to the JSON")
    p.set_defaults(handler=_cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeloop", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_data(sub)
    _add_compress(sub)
    _add_report(sub)
    return parser


def setup_logging(verbose: int) -> None:
    """Our own loggers at INFO (DEBUG with -v); third-party loggers at WARNING (INFO with -vv)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = logging.DEBUG if verbose >= 1 else logging.INFO
    for name in ("host", "device", "shared", "edgeloop"):
        logging.getLogger(name).setLevel(ours)
    logging.getLogger().setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    # torch's exporter warns about torchvision ops on every export; nothing a user can act on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EdgeloopError as e:
        print(f"edgeloop: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
