"""`edgeloop`: the host command line. Heavy imports happen inside each command, so --help is instant."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.errors import EdgeloopError

log = logging.getLogger("edgeloop")

Handler = Callable[[argparse.Namespace], int]


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


def _add_train(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(handler=_cmd_train)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from host.factory.evaluate import evaluate_command
    from host.table import print_table

    r = evaluate_command(
        Path(args.model), args.data, limit=args.limit, threads=args.threads, iterations=args.iterations
    )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    lat = r["latency_ms"]
    print_table(
        f"{Path(args.model).name} on {r['n_images']:,} images",
        ["metric", "value"],
        [
            ("top-1 (%)", 100 * r["top1"]),
            ("params", r["params"]),
            ("MACs", r["macs"]),
            ("latency p50 / p99, batch 1 (ms)", f"{lat['p50']:.3f} / {lat['p99']:.3f}"),
            (f"throughput, batch {r['throughput_batch']} (img/s)", r["throughput_ips"]),
            ("runtime", r["runtime"]),
        ],
    )
    print_table("per-class top-1 (%)", ["class", "top-1"], [(c, 100 * v) for c, v in r["per_class"].items()])
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, size and CPU speed of a .pt checkpoint or .onnx file")
    p.add_argument("model", help="a .pt checkpoint or an .onnx file")
    p.add_argument("--data", required=True, help="labelled ImageFolder dir or .tar.gz[::subdir]")
    p.add_argument("--limit", type=int, help="evaluate on a class-balanced subset of this many images")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all cores)")
    p.add_argument("--iterations", type=int, default=200, help="timed batch-1 runs for latency")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_evaluate)


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
    print(f"wrote {args.out}: {parity}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to verified ONNX")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--data", help="images for the parity check (default: the bundled golden set)")
    p.add_argument("--atol", type=float, default=1e-3, help="max abs logit difference allowed")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization nodes")
    p.add_argument("--parity-images", type=int, default=1000, help="how many images of --data the parity check uses")
    p.set_defaults(handler=_cmd_export)


def _cmd_import_cifar(args: argparse.Namespace) -> int:
    from shared.datasets import import_cifar_python

    counts = import_cifar_python(args.archive, args.out)
    print(f"wrote {counts['train']:,} training and {counts['test']:,} test images under {args.out}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("import-cifar", help="convert cifar-10-python.tar.gz to PNG class folders")
    q.add_argument("archive")
    q.add_argument("--out", required=True)
    q.set_defaults(handler=_cmd_import_cifar)


def _cmd_compress(args: argparse.Namespace) -> int:
    from host.factory.compress.pipeline import compress
    from host.factory.compress.recipe import builtin_recipes, load_recipe

    recipe_path = Path(args.recipe)
    if not recipe_path.exists() and args.recipe in builtin_recipes():
        recipe_path = builtin_recipes()[args.recipe]
    recipe, text = load_recipe(recipe_path)
    summary = compress(recipe, text, Path(args.checkpoint), args.data, Path(args.out), val_data=args.val_data)
    print(
        json.dumps({k: summary[k] for k in ("name", "source_top1", "metrics", "params", "macs", "outputs")}, indent=2)
    )
    return 0


def _add_compress(sub: argparse._SubParsersAction) -> None:
    from host.factory.compress.recipe import builtin_recipes

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
    p.set_defaults(handler=_cmd_compress)


def _cmd_report(args: argparse.Namespace) -> int:
    from host.factory.report import build_report, print_report, write_report

    build_dir = Path(args.build_dir)
    report = build_report(
        build_dir,
        args.data,
        Path(args.baseline),
        Path(args.torch_baseline) if args.torch_baseline else None,
        threads=args.threads,
        limit=args.limit,
        rounds=args.rounds,
    )
    json_path = Path(args.json_out or build_dir / "report.json")
    png_path = Path(args.png or json_path.with_suffix(".png"))
    write_report(report, json_path, png_path)
    print_report(report)
    print(f"wrote {json_path} and {png_path}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
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


DEFAULT_SERVER = "http://127.0.0.1:8080"


def _server_arg(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument(
        "--server",
        default=os.environ.get("EDGELOOP_SERVER", DEFAULT_SERVER),
        help="URL of `edgeloop serve` (env EDGELOOP_SERVER)",
    )


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from shared.signing import generate_keypair

    out = Path(args.out_dir)
    kid = generate_keypair(out / f"{args.name}.key", out / f"{args.name}.pub")
    print(f"wrote {out / (args.name + '.key')} (keep it secret) and {out / (args.name + '.pub')} (key id {kid})")
    print("devices trust the public key through `trusted_keys` in their agent.toml")
    return 0


def _cmd_release_create(args: argparse.Namespace) -> int:
    from host.fleet.release import ReleaseStore, create_release

    if args.sign_key is None and not args.unsigned:
        raise EdgeloopError("pass --sign-key KEY (make one with `edgeloop keys generate`) or --unsigned")
    m = create_release(
        Path(args.build_dir),
        args.name,
        args.version,
        ReleaseStore(args.store),
        sign_key=args.sign_key,
        include=args.include,
        source_top1=args.source_top1,
        notes=args.notes,
    )
    if args.json:
        print(m.model_dump_json(indent=2))
        return 0
    from host.table import print_table

    print_table(
        f"release {m.ref} ({'signed, key ' + str(m.key_id) if m.signature else 'UNSIGNED'})",
        ["artifact", "precision", "runtime", "bytes", "golden top-1 %", "sha256"],
        [
            (
                a.name,
                a.precision,
                a.runtime,
                a.size,
                100 * a.golden_top1 if a.golden_top1 is not None else None,
                a.sha256[:16],
            )
            for a in m.artifacts
        ],
    )
    return 0


def _cmd_release_list(args: argparse.Namespace) -> int:
    from host.fleet.release import ReleaseStore
    from host.table import print_table

    ms = ReleaseStore(args.store).all()
    print_table(
        "releases",
        ["release", "created", "artifacts", "source top-1 %", "signed"],
        [
            (
                str(m.ref),
                m.created_at.isoformat(timespec="seconds"),
                len(m.artifacts),
                100 * m.model.source_top1,
                "yes" if m.signature else "no",
            )
            for m in ms
        ],
    )
    return 0


def _add_release(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="release signing keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    g = ksub.add_parser("generate", help="make an ed25519 key pair")
    g.add_argument("--out-dir", default="keys")
    g.add_argument("--name", default="release")
    g.set_defaults(handler=_cmd_keys_generate)

    p = sub.add_parser("release", help="package and list releases")
    rsub = p.add_subparsers(dest="release_command", required=True)
    c = rsub.add_parser("create", help="package the ONNX files of a build directory as a signed release")
    c.add_argument("build_dir")
    c.add_argument("--name", required=True)
    c.add_argument("--version", required=True, help="dot-separated integers, e.g. 1.2.0")
    c.add_argument("--sign-key", help="ed25519 private key (PEM)")
    c.add_argument("--unsigned", action="store_true", help="allow an unsigned release (devices refuse it by default)")
    c.add_argument("--store", default="releases", help="artifact store served by `edgeloop serve --releases`")
    c.add_argument("--include", nargs="+", help="only these ONNX files of the build directory")
    c.add_argument("--source-top1", type=float, help="source-model top-1 (0..1) if no model card says it")
    c.add_argument("--notes", default="")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_cmd_release_create)
    ls = rsub.add_parser("list", help="list releases in a store")
    ls.add_argument("--store", default="releases")
    ls.set_defaults(handler=_cmd_release_list)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from host.fleet.server import HostServer, ServeConfig

    cfg = ServeConfig(
        releases=Path(args.releases),
        store_url=args.store,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        broker_url=args.broker,
        broker_protocol=args.mqtt_protocol,
        embedded_broker=args.embedded_broker,
        embedded_broker_port=args.embedded_broker_port,
        ingest_workers=args.ingest_workers,
        broker_username=os.environ.get("EDGELOOP_BROKER_USERNAME"),
        broker_password=os.environ.get("EDGELOOP_BROKER_PASSWORD"),
    )
    server = HostServer(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(
        f"edgeloop serve: dashboard {cfg.base_url}  broker {cfg.broker_url}  store {server.store.dialect}", flush=True
    )
    stop.wait()
    server.stop()
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="artifact server + ingest + rollout controller + REST API + dashboard")
    p.add_argument("--releases", default="releases", help="artifact store directory (from `release create`)")
    p.add_argument("--store", default="edgeloop.sqlite", help="SQLite path or postgresql://user:pw@host/db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", help="URL devices use to reach this server (default http://HOST:PORT/)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL")
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1", "auto"], default="5")
    p.add_argument("--embedded-broker", action="store_true", help="start an embedded MQTT broker (amqtt, 3.1.1)")
    p.add_argument("--embedded-broker-port", type=int, default=1883)
    p.add_argument("--ingest-workers", type=int, default=1, help="workers sharing the report subscription (MQTT 5)")
    p.set_defaults(handler=_cmd_serve)


def _rollout_table(r: dict[str, Any]) -> None:
    from host.table import print_table

    devices = r.get("devices") or []
    print(
        f"rollout {r['id']}: {r['release_name']}@{r['release_version']} -> {r['fleet']}: {r['state']}"
        + (f" ({r['reason']})" if r.get("reason") else "")
    )
    waves = {w["wave"]: w for w in r.get("waves") or []}
    print_table(
        "devices",
        ["wave", "device", "wave state", "device state", "top-1 %", "p99 ms", "note"],
        [
            (
                d["wave"] + 1,
                d["device_id"],
                waves.get(d["wave"], {}).get("state"),
                d["state"],
                100 * d["top1"] if d["top1"] is not None else None,
                d["p99_ms"],
                (d["error"] or "") + ("" if d["was_online"] else " [was offline]"),
            )
            for d in devices
        ],
    )


def _cmd_rollout(args: argparse.Namespace) -> int:
    import time

    from host.fleet.client import ApiClient
    from host.fleet.rollout import RolloutConfig, parse_duration

    api = ApiClient(args.server)
    if args.rollout_command == "start":
        cfg = RolloutConfig(
            waves=[w.strip() for w in args.waves.split(",")],
            max_accuracy_drop=args.max_accuracy_drop,
            p99_budget_ms=args.p99_budget_ms,
            abort_failures=_fraction(args.abort_failures),
            wave_timeout_s=parse_duration(args.wave_timeout),
            precision=args.precision,
        )
        r = api.post(
            "/api/v1/rollouts", {"release": args.release, "fleet": args.fleet, "config": cfg.model_dump(mode="json")}
        )
        print(f"started rollout {r['id']}")
        if args.wait:
            while r["state"] not in ("completed", "aborted", "rolled_back"):
                time.sleep(1)
                r = api.get(f"/api/v1/rollouts/{r['id']}")
            _rollout_table(r)
            return 0 if r["state"] == "completed" else 1
        return 0
    if args.rollout_command == "status":
        rs = [api.get(f"/api/v1/rollouts/{args.rollout_id}")] if args.rollout_id else api.get("/api/v1/rollouts")
        if args.json:
            print(json.dumps(rs, indent=2))
        else:
            for r in rs:
                _rollout_table(r)
        return 0
    r = api.post(f"/api/v1/rollouts/{args.rollout_id}/{args.rollout_command}", {"reason": args.reason})
    print(f"rollout {r['id']}: {r['state']}")
    return 0


def _fraction(text: str) -> float:
    t = text.strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise EdgeloopError(f"{text!r} must be a fraction (0.1) or a percentage (10%)") from None


def _add_rollout(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="staged rollouts (talks to `edgeloop serve`)")
    rsub = p.add_subparsers(dest="rollout_command", required=True)
    s = rsub.add_parser("start", help="roll a release out in gated waves")
    s.add_argument("release", help="name@version (or name: the latest version)")
    s.add_argument("--fleet", required=True)
    s.add_argument("--waves", default="1,25%,100%", help="cumulative wave targets (counts or percentages)")
    s.add_argument("--max-accuracy-drop", type=float, default=0.5, help="top-1 points below the source model")
    s.add_argument("--p99-budget-ms", type=float, help="p99 latency budget (batch 1)")
    s.add_argument("--abort-failures", default="10%", help="failure fraction of a wave that aborts")
    s.add_argument("--wave-timeout", default="10m", help="e.g. 600, 90s, 10m")
    s.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="force a precision on every device")
    s.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    _server_arg(s)
    st = rsub.add_parser("status", help="show rollouts")
    st.add_argument("rollout_id", nargs="?")
    st.add_argument("--json", action="store_true")
    _server_arg(st)
    for name, text in (
        ("abort", "stop a rollout and roll touched devices back"),
        ("rollback", "roll back every device a rollout touched"),
    ):
        a = rsub.add_parser(name, help=text)
        a.add_argument("rollout_id")
        a.add_argument("--reason", default=f"{name} requested from the CLI")
        _server_arg(a)
    p.set_defaults(handler=_cmd_rollout)


def _cmd_fleet_status(args: argparse.Namespace) -> int:
    from host.fleet.client import ApiClient
    from host.table import print_table

    devices = ApiClient(args.server).get("/api/v1/fleet" + (f"?fleet={args.fleet}" if args.fleet else ""))
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    print_table(
        "fleet",
        ["fleet", "device", "state", "release", "p50 ms", "p99 ms", "top-1 %", "runtime", "GPU/CPU"],
        [
            (
                d["fleet"],
                d["device_id"],
                d["state"],
                d["release"],
                d["p50_ms"],
                d["p99_ms"],
                100 * d["top1"] if d["top1"] is not None else None,
                d["runtime"],
                d["accelerator"] if d["gpu"] else "CPU",
            )
            for d in devices
        ],
    )
    return 0


def _add_fleet(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="fleet views")
    fsub = p.add_subparsers(dest="fleet_command", required=True)
    s = fsub.add_parser("status", help="one line per device")
    s.add_argument("--fleet")
    s.add_argument("--json", action="store_true")
    _server_arg(s)
    s.set_defaults(handler=_cmd_fleet_status)


def _cmd_simulate(args: argparse.Namespace) -> int:
    import math
    import signal
    import threading

    from host.fleet.simulate import MAX_DEVICES_PER_PROCESS, run_shard, run_sharded

    processes = args.processes or max(1, math.ceil(args.devices / MAX_DEVICES_PER_PROCESS))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if processes > 1:
        return run_sharded(args, processes, stop)
    return run_shard(args, stop)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="N protocol-true simulated devices for fleet-scale tests")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--processes", type=int, help="split the devices over processes (default: 300 per process)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1", "auto"], default="5")
    p.add_argument("--fleet", default="sim")
    p.add_argument("--prefix", default="sim", help="device id prefix")
    p.add_argument("--p50-ms", type=float, default=2.0, help="latency model: p50 of the reference model")
    p.add_argument("--accuracy-drop", type=float, default=0.0, help="top-1 points below the release's source")
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of deploys that fail")
    p.add_argument("--respond-delay", type=float, default=0.05, help="seconds before answering a command")
    p.add_argument("--reports-per-device", type=int, default=0, help="stream this many telemetry reports each")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between streamed reports")
    p.add_argument("--stream-when", help="wait for this file to exist before streaming (orchestration)")
    p.add_argument("--exit-after-stream", action="store_true", help="stop once the stream is acknowledged")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(handler=_cmd_simulate)


def _cmd_demo(args: argparse.Namespace) -> int:
    from host.demo import run_demo

    return run_demo(
        Path(args.workdir) if args.workdir else None,
        keep_running=args.keep_running,
        devices=args.devices,
        http_port=args.port,
        max_accuracy_drop=args.max_accuracy_drop,
    )


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole closed loop on this machine, offline")
    p.add_argument("--keep-running", action="store_true", help="leave the dashboard up afterwards")
    p.add_argument("--workdir", help="keep everything here (default: a temporary directory)")
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--port", type=int, help="dashboard port (default: a free one)")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=2.0,
        help="gate in top-1 points; the demo devices measure on 200 golden images (0.5 pt each)",
    )
    p.set_defaults(handler=_cmd_demo)


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
    _add_release(sub)
    _add_serve(sub)
    _add_rollout(sub)
    _add_fleet(sub)
    _add_simulate(sub)
    _add_demo(sub)
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
