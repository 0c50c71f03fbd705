"""`edgeloop-agent bench`: build and benchmark an ONNX model locally, like trtexec.

``bench_command`` makes the report (also the ``--json`` object); ``_cmd_bench`` prints it for people.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from device.cli import bench_all
from device.engine import bench, sysinfo
from device.engine.runtimes import registry
from device.engine.runtimes.base import Engine, Runtime
from shared import datasets
from shared.digest import sha256_file
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta, read_meta

log = logging.getLogger(__name__)


def _latency_part(
    rt: Runtime, engine: Engine, model: Path, precision: str, batch: int, warmup: int, iterations: int, tbatch: int
) -> dict[str, Any]:
    lat = bench.measure_latency(rt, batch=batch, warmup=warmup, iterations=iterations)
    return {
        "model": str(model),
        "sha256": sha256_file(model),
        "runtime": rt.name,
        "runtime_version": rt.version(),
        "accelerator": rt.accelerator(),
        "machine": sysinfo.machine(),
        "precision": precision,
        "build_s": round(engine.build_s, 3),
        "batch": batch,
        "iterations": iterations,
        "latency_ms": lat.latency_ms,
        "latency_breakdown_ms": lat.breakdown_ms,
        "throughput_batch": min(tbatch, engine.max_batch),
        "throughput_batch_requested": tbatch,
    }


def _raw_part(rt: Runtime, tbatch: int, rounds: int) -> dict[str, Any]:
    raw = bench.raw_throughput(rt, batch=tbatch, rounds=rounds, min_seconds=1.0)
    return {
        "raw_throughput_ips": statistics.median(raw.ips),
        "raw_throughput_rounds": [round(v, 1) for v in raw.ips],
        "rounds": rounds,
        "power": raw.power_figures(),
    }


def _data_part(rt: Runtime, meta: ModelMeta, data: str, limit: int | None, tbatch: int, rounds: int) -> dict[str, Any]:
    """Raw throughput in rounds alternating with the evaluations it is compared with."""
    samples = datasets.list_samples(data)
    if limit:
        samples = datasets.balanced_subset(samples, limit)
    both = bench.raw_vs_end_to_end(rt, samples, meta.classes, meta.preprocessing, batch=tbatch, rounds=rounds)
    ev = both.evaluation
    return {
        "raw_throughput_ips": both.raw_median,
        "raw_throughput_rounds": [round(v, 1) for v in both.raw_ips],
        "top1": ev.top1,
        "n_images": ev.n_images,
        "end_to_end_throughput_ips": both.end_to_end_median,
        "end_to_end_rounds": [round(v, 1) for v in both.end_to_end_ips],
        "rounds": rounds,
        "decode_preprocess_ms_per_image": 1e3 * ev.decode_s / max(1, ev.n_images),
        "inference_ms_per_image": 1e3 * ev.infer_s / max(1, ev.n_images),
        "end_to_end_vs_raw": both.ratio,
        "per_class": ev.per_class,
        "power": both.power_figures(),
    }


def _profile_part(rt: Runtime, engine: Engine, tbatch: int) -> dict[str, Any]:
    layers = rt.profile_layers(batch=tbatch)
    by_op: dict[str, float] = {}
    for layer in layers:
        by_op[layer.op] = by_op.get(layer.op, 0.0) + layer.ms
    return {
        "profile_batch": min(tbatch, engine.max_batch),
        "layers": [
            {"name": x.name, "op": x.op, "ms": x.ms, "output_shape": list(x.output_shape or [])} for x in layers
        ],
        "layers_total_ms": sum(x.ms for x in layers),
        "ms_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
    }


def bench_command(
    model: Path,
    precision: str | None,
    batch: int,
    data: str | None,
    runtime_name: str,
    warmup: int,
    iterations: int,
    throughput_batch: int,
    limit: int | None,
    sparse: bool = False,
    rounds: int = 3,
    profile: bool = False,
    threads: int = 0,
    dla_core: int | None = None,
) -> dict[str, Any]:
    """trtexec-like local report: build, latency percentiles, raw and end-to-end throughput, top-1."""
    if rounds < 1:
        raise EdgeloopError(f"--rounds must be at least 1, got {rounds}")
    meta = read_meta(model)
    precision = precision or meta.precision
    if threads < 0:
        raise EdgeloopError(f"--threads must be 0 (one per core) or more, got {threads}")
    config = registry.runtime_config(runtime_name, threads, sparse, (batch, throughput_batch), dla_core)
    made = registry.create(config)
    if dla_core is not None and made.target() == made.name:
        made.close()
        raise EdgeloopError(f"--dla-core needs a runtime with DLA cores (tensorrt on a Jetson); {made.name} has none")
    # the file's own precision is a plain str from its metadata, passed on unchecked as it always was
    with registry.open_onnx(made, model, precision) as rt:
        engine = rt.engine
        if throughput_batch > engine.max_batch:
            log.warning(
                "the engine takes at most %d images per batch (a fixed-batch ONNX?): throughput is measured at %d, "
                "not at --throughput-batch %d",
                engine.max_batch,
                engine.max_batch,
                throughput_batch,
            )
        result = _latency_part(rt, engine, model, precision, batch, warmup, iterations, throughput_batch)
        if data is None:
            result.update(_raw_part(rt, throughput_batch, rounds))
        else:
            result.update(_data_part(rt, meta, data, limit, throughput_batch, rounds))
        if profile:
            result.update(_profile_part(rt, engine, throughput_batch))
        result["process_rss_mb"] = sysinfo.process_rss_mb()
        result["engine_gpu_memory_mb"] = rt.gpu_memory_mb()  # the engine's own, where the backend tells
    return result


def _cmd_all(args: argparse.Namespace) -> int:
    config = registry.runtime_config(args.runtime, args.threads, args.sparse, (args.throughput_batch,))
    r = bench_all.compare(
        [Path(m) for m in args.model], config, args.throughput_batch, args.seconds, args.data, args.limit
    )
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        bench_all.print_comparison(r)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.all:
        return _cmd_all(args)
    if len(args.model) > 1:
        raise EdgeloopError("several ONNX files are compared with --all; without it, bench one file")
    r = bench_command(
        Path(args.model[0]),
        args.precision,
        args.batch,
        args.data,
        args.runtime,
        args.warmup,
        args.iterations,
        args.throughput_batch,
        args.limit,
        args.sparse,
        args.rounds,
        args.profile,
        args.threads,
        args.dla_core,
    )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    _print_report(r)
    return 0


def _print_report(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print(f"model        {r['model']}  ({r['precision']}, {r['runtime']} {r['runtime_version']}, {r['accelerator']})")
    print(f"build        {r['build_s']:.2f} s")
    print(
        f"latency      batch {r['batch']}: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
        f"max {lat['max']:.3f} ms  ({r['iterations']} runs)"
    )
    if r["latency_breakdown_ms"]:
        b = r["latency_breakdown_ms"]
        print(f"             H2D {b['h2d']:.3f}  compute {b['compute']:.3f}  D2H {b['d2h']:.3f} ms (CUDA events)")
    print(f"throughput   {r['raw_throughput_ips']:,.0f} img/s at batch {r['throughput_batch']} (pre-decoded tensors)")
    if "top1" in r:
        print(f"accuracy     top-1 {100 * r['top1']:.2f}% on {r['n_images']:,} images")
        print(
            f"end-to-end   {r['end_to_end_throughput_ips']:,.0f} img/s ({100 * r['end_to_end_vs_raw']:.0f}% of raw, "
            f"medians of {r['rounds']} alternating rounds); "
            f"decode+preprocess {r['decode_preprocess_ms_per_image']:.3f} ms/img, "
            f"inference {r['inference_ms_per_image']:.3f} ms/img"
        )
    if r.get("power"):
        _print_power(r["power"])
    if "layers" in r:
        _print_profile(r)
    mem = r["engine_gpu_memory_mb"]
    gpu = f", engine GPU memory {mem:.0f} MB (activations, I/O buffers, plan)" if mem is not None else ""
    rss = f"RSS {r['process_rss_mb']:.0f} MB" if r["process_rss_mb"] is not None else "RSS unknown (no /proc)"
    print(f"memory       {rss}{gpu}")


def _print_power(p: dict[str, Any]) -> None:
    per_image = p["energy_mj_per_image"]
    each = f", {per_image:.3f} mJ/img" if per_image is not None else ""
    print(
        f"power        mean {p['mean_mw']:,.0f} mW, peak {p['peak_mw']:,.0f} mW ({p['total_of']}, {p['source']}, "
        f"{p['samples']} samples in {p['seconds']:.1f} s of raw rounds){each}"
    )


def _print_profile(r: dict[str, Any], top: int = 15) -> None:
    total = r["layers_total_ms"] or 1.0
    print(f"profile      batch {r['profile_batch']}: {r['layers_total_ms']:.2f} ms in {len(r['layers'])} layers")
    for layer in sorted(r["layers"], key=lambda x: -x["ms"])[:top]:
        shape = "x".join(map(str, layer["output_shape"])) or "-"
        share = 100 * layer["ms"] / total
        print(f"  {layer['ms']:8.3f} ms {share:5.1f}%  {layer['op']:<16} {shape:<18} {layer['name']}")
    print("  by op: " + ", ".join(f"{op} {ms:.2f} ms" for op, ms in r["ms_by_op"].items()))


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="build and benchmark an ONNX model locally (like trtexec)")
    b.add_argument("model", nargs="+", help="ONNX file (with --all: every precision's file of one model)")
    b.add_argument(
        "--all",
        action="store_true",
        help=(
            "compare every installed runtime x every precision of the files, as the agent's selection does on a "
            "deploy: built, self-tested, INT8 verified against the FP32 file, timed at --throughput-batch"
        ),
    )
    b.add_argument("--seconds", type=float, default=1.0, help="with --all: timing per candidate")
    b.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="default: the file's own")
    b.add_argument("--batch", type=int, default=1, help="batch size for latency")
    b.add_argument("--throughput-batch", type=int, default=256, help="batch size for throughput and evaluation")
    b.add_argument("--data", help="labelled ImageFolder set: adds top-1 and end-to-end throughput")
    b.add_argument("--limit", type=int, help="evaluate on at most this many images")
    b.add_argument(
        "--rounds",
        type=int,
        default=3,
        help=(
            "raw-throughput rounds, reported as their median; "
            "with --data they alternate with evaluations and the medians are compared"
        ),
    )
    # "auto" and every registered backend, from the registry
    b.add_argument("--runtime", choices=registry.config_types(), default=registry.AUTO)
    b.add_argument("--threads", type=int, default=0, help="ONNX Runtime / OpenVINO threads (0: one per core)")
    b.add_argument("--sparse", action="store_true", help="enable 2:4 sparse weights (TensorRT, Ampere+)")
    b.add_argument(
        "--dla-core",
        type=int,
        help="build and run on this DLA core (TensorRT on a Jetson with DLA, e.g. AGX Orin: 0 or 1)",
    )
    b.add_argument(
        "--profile",
        action="store_true",
        help="per-layer times at the throughput batch, like trtexec --dumpProfile (ORT, TensorRT, OpenVINO profilers)",
    )
    b.add_argument("--warmup", type=int, default=20)
    b.add_argument("--iterations", type=int, default=200)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=_cmd_bench)
