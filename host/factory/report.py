"""``edgeloop report``: every variant of a build directory evaluated on the same data in one run.

Every variant runs on every runtime asked for (``--runtime``, default: every backend installed here,
e.g. ONNX Runtime and OpenVINO), one row per variant x runtime: accuracy (top-1 and change vs the
baseline on the same runtime), size (ONNX bytes and gzip bytes), params, MACs, latency (batch 1) and
throughput (batch 256), and speed-ups against the baseline FP32 ONNX *on its fastest FP32 runtime*
and against PyTorch eager FP32. Throughput is measured in interleaved rounds (every engine once per
round, median over rounds) so that machine noise hits all alike. Writes JSON and a PNG of accuracy
against throughput with the Pareto front.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from device.engine import bench
from device.engine.runtimes import registry
from device.engine.sysinfo import machine
from host.factory import checkpoint
from host.factory.compress.sparsity import gzip_size
from host.factory.onnx_stats import onnx_params_macs
from host.factory.ort import describe, installed_runtimes
from host.fleet.release import card_for
from host.table import print_table
from shared import datasets
from shared.datasets import Sample
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta, read_meta

log = logging.getLogger(__name__)


def _torch_eager_throughput(ckpt_path: Path, batch: int, seconds: float, threads: int) -> float:
    import torch

    torch.set_num_threads(threads or (os.cpu_count() or 1))
    model = checkpoint.load(ckpt_path).build().eval()
    x = torch.randn(batch, 3, 32, 32)
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            model(x)
            n += 1
        return n * batch / (time.perf_counter() - t0)


def _notes(card: dict[str, Any]) -> list[str]:
    out = []
    for step in card.get("steps", []):
        if step.get("type") == "finetune" and step.get("top1_without_distill") is not None:
            out.append(
                f"distillation: {100 * step['top1_with_distill']:.2f}% with KD vs "
                f"{100 * step['top1_without_distill']:.2f}% without, same student and epochs"
            )
        if step.get("type") in ("unstructured", "sparse24") and step.get("note"):
            out.append(step["note"])
        if step.get("type") == "sparse24":
            holds = step.get("pattern_holds", {})
            out.append(f"2:4 check: {sum(holds.values())}/{len(holds)} eligible layers follow the pattern")
    return out


def build_report(
    build_dir: Path,
    data: str,
    baseline_onnx: Path,
    baseline_pt: Path | None = None,
    threads: int = 0,
    limit: int | None = None,
    rounds: int = 3,
    seconds: float = 2.0,
    latency_iterations: int = 300,
    runtimes: list[str] | None = None,
) -> dict[str, Any]:
    files, baseline_onnx = _variant_files(build_dir, baseline_onnx)
    names = runtimes or installed_runtimes()
    samples = datasets.list_samples(data)
    if limit:
        samples = datasets.balanced_subset(samples, limit)
    with tempfile.TemporaryDirectory() as tmp:
        rows, samples_by_model, torch_samples, skipped, described = _run_variants(
            files, names, samples, Path(tmp), threads, latency_iterations, (baseline_pt, rounds, seconds)
        )
    if not any(r["file"] == baseline_onnx.name for r in rows.values()):
        raise EdgeloopError(f"the baseline {baseline_onnx.name} ran on none of {', '.join(names)}")
    torch_thr = statistics.median(torch_samples) if torch_samples else None
    fastest = _add_speedups(rows, samples_by_model, baseline_onnx.name, torch_thr)
    import onnxruntime

    return {
        "machine": {**machine(), "onnxruntime": onnxruntime.__version__},
        "data": data,
        "n_images": next(iter(rows.values()))["n_images"],
        "baseline": baseline_onnx.name,
        "baseline_runtime": fastest,
        "torch_eager_fp32_throughput_ips": torch_thr,
        "torch_eager_rounds": [round(v, 1) for v in torch_samples],
        "threads": threads or os.cpu_count(),
        "batch_throughput": 256,
        "rounds": rounds,
        "runtimes": [described.get(n, n) for n in names],
        "skipped": skipped,
        "variants": list(rows.values()),
    }


def _run_variants(
    files: list[Path],
    names: list[str],
    samples: list[Sample],
    tmp: Path,
    threads: int,
    latency_iterations: int,
    rounds: tuple[Path | None, int, float],
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]], list[float], list[dict[str, str]], dict[str, str]]:
    """Every file on every runtime: its row, then throughput in interleaved rounds (all engines stay open)."""
    rows: dict[str, dict[str, Any]] = {}
    engines: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    described: dict[str, str] = {}
    try:
        for i, f in enumerate(files):
            meta = read_meta(f)
            for name in names:
                try:
                    rt = registry.load_onnx(
                        registry.runtime_config(name, threads), f, meta.precision, tmp / f"{i}-{name}"
                    )
                except EdgeloopError as e:  # e.g. a precision this runtime does not run: say so, go on
                    log.warning("%s on %s: skipped (%s)", f.name, name, e)
                    skipped.append({"file": f.name, "runtime": name, "reason": str(e)})
                    continue
                engines[_key(f.name, name)] = rt
                described[name] = describe(rt)
                rows[_key(f.name, name)] = {**_variant_row(f, meta, rt, samples, latency_iterations), "runtime": name}
        baseline_pt, n_rounds, seconds = rounds
        samples_by_model, torch_samples = _throughput_rounds(engines, baseline_pt, n_rounds, seconds, threads)
    finally:
        for rt in engines.values():
            rt.close()
    return rows, samples_by_model, torch_samples, skipped, described


def _key(file: str, runtime: str) -> str:
    return f"{file} @ {runtime}"


def _variant_files(build_dir: Path, baseline_onnx: Path) -> tuple[list[Path], Path]:
    """The ONNX files to compare, baseline included, and the baseline's path among them."""
    files = sorted(build_dir.glob("*.onnx"))
    same_name = [f for f in files if f.name == baseline_onnx.name]
    if same_name:  # the build directory holds its own copy of the baseline: use that one
        baseline_onnx = same_name[0]
    else:
        files.insert(0, baseline_onnx)
    if not files:
        raise EdgeloopError(f"no .onnx files in {build_dir}")
    return files, baseline_onnx


def _variant_row(f: Path, meta: ModelMeta, rt: Any, samples: list[Sample], latency_iterations: int) -> dict[str, Any]:
    """Size, compute, accuracy and batch-1 latency of one ONNX file (throughput comes later)."""
    import onnx

    blob = f.read_bytes()
    params, macs = onnx_params_macs(onnx.load_from_string(blob))
    ev = bench.evaluate(rt, samples, meta.classes, meta.preprocessing)
    lat = bench.measure_latency(rt, batch=1, warmup=30, iterations=latency_iterations)
    log.info("%s: top-1 %.2f%%, p50 %.3f ms", f.name, 100 * ev.top1, lat.latency_ms["p50"])
    has_card = f.suffix == ".onnx" and not f.stem.endswith(("-int8", "-int8-trt", "-fp16"))
    return {
        "file": f.name,
        "sha256": hashlib.sha256(blob).hexdigest(),  # which file was measured: the ship rule checks it
        "precision": meta.precision,
        "flavour": meta.extra.get("runtime", "any"),
        "onnx_bytes": len(blob),
        "gzip_bytes": gzip_size(blob),
        "params": params,
        "macs": macs,
        "top1": ev.top1,
        "n_images": ev.n_images,
        "latency_ms": lat.latency_ms,
        "notes": _notes(card_for(f.parent, f)) if has_card else [],
    }


def _throughput_rounds(
    runtimes: dict[str, Any], baseline_pt: Path | None, rounds: int, seconds: float, threads: int
) -> tuple[dict[str, list[float]], list[float]]:
    """Batch-256 throughput of every model (and PyTorch eager), interleaved: every model once per round."""
    samples_by_model: dict[str, list[float]] = {n: [] for n in runtimes}
    torch_samples: list[float] = []
    for r in range(rounds):
        for name, rt in runtimes.items():
            samples_by_model[name].append(bench.measure_throughput(rt, batch=256, min_seconds=seconds).ips)
        if baseline_pt is not None:
            torch_samples.append(_torch_eager_throughput(baseline_pt, 256, seconds, threads))
        log.info("throughput round %d/%d done", r + 1, rounds)
    return samples_by_model, torch_samples


def _add_speedups(
    rows: dict[str, dict[str, Any]], samples: dict[str, list[float]], baseline: str, torch_thr: float | None
) -> str:
    """Throughput and ratios on every row; returns the runtime on which the FP32 baseline was fastest.

    ``speedup_vs_baseline_onnx`` is against the baseline on *its fastest* runtime (what a user gets without
    edgeloop's compression); ``speedup_vs_baseline_same_runtime`` against the baseline on the row's runtime.
    Accuracy changes are against the baseline on the row's runtime.
    """
    thr = {key: statistics.median(samples[key]) for key in rows}
    base_by_runtime = {r["runtime"]: key for key, r in rows.items() if r["file"] == baseline}
    fastest = max(base_by_runtime, key=lambda rt: thr[base_by_runtime[rt]])
    best = thr[base_by_runtime[fastest]]
    for key, row in rows.items():
        same = base_by_runtime.get(row["runtime"], base_by_runtime[fastest])
        row.update(
            throughput_ips=thr[key],
            throughput_rounds=[round(v, 1) for v in samples[key]],
            top1_delta_points=100 * (row["top1"] - rows[same]["top1"]),
            speedup_vs_baseline_onnx=thr[key] / best,
            speedup_vs_baseline_same_runtime=thr[key] / thr[same],
            speedup_vs_torch_eager=thr[key] / torch_thr if torch_thr else None,
        )
    _against_unpruned_int8(rows, thr, baseline)
    return fastest


def _against_unpruned_int8(rows: dict[str, dict[str, Any]], thr: dict[str, float], baseline: str) -> None:
    """A compressed variant pays only if it is faster than the baseline's own INT8 file on the same runtime
    (a MAC cut is not a speed-up: INT8 kernels at 32x32 are bound by memory and per-layer overheads, not
    MACs). Every compressed row gets ``speedup_vs_unpruned_int8`` and ``slower_than_unpruned_int8``; None
    where the unpruned INT8 file was not measured on that runtime."""
    unpruned = baseline.removesuffix(".onnx") + "-int8.onnx"
    int8_by_runtime = {r["runtime"]: key for key, r in rows.items() if r["file"] == unpruned}
    for key, row in rows.items():
        ref = int8_by_runtime.get(row["runtime"])
        compressed = row["file"] not in (baseline, unpruned) and ref is not None
        ratio = thr[key] / thr[ref] if compressed and ref is not None else None
        row.update(speedup_vs_unpruned_int8=ratio, slower_than_unpruned_int8=ratio is not None and ratio < 1.0)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (throughput up, accuracy up), sorted by throughput."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = report["variants"]
    pts = [(r["throughput_ips"], 100 * r["top1"]) for r in v]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    markers = {name: "osD^v"[i % 5] for i, name in enumerate(dict.fromkeys(r["runtime"] for r in v))}
    for r, (x, y) in zip(v, pts, strict=True):
        ax.scatter(
            x,
            y,
            s=40,
            marker=markers[r["runtime"]],
            c="tab:blue" if r["precision"] == "fp32" else "tab:orange" if r["precision"] == "int8" else "tab:green",
        )
        label = (
            f"{r['file'].removesuffix('.onnx')} ({r['runtime']})"
            if len(markers) > 1
            else r["file"].removesuffix(".onnx")
        )
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
    if report.get("torch_eager_fp32_throughput_ips"):
        ax.axvline(report["torch_eager_fp32_throughput_ips"], color="gray", lw=0.8, ls=":", label="PyTorch eager FP32")
    shapes = ", ".join(f"{m} {name}" for name, m in markers.items())
    ax.set_xlabel(f"throughput, batch 256, {report['threads']} threads (img/s); markers: {shapes}")
    ax.set_ylabel(f"top-1 on {report['n_images']:,} images (%)")
    ax.set_title("Accuracy vs throughput (blue FP32, orange INT8, green FP16)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_report(report: dict[str, Any]) -> None:
    rows = [
        (
            r["file"],
            r["runtime"],
            r["onnx_bytes"],
            r["gzip_bytes"],
            r["params"],
            r["macs"],
            100 * r["top1"],
            f"{r['top1_delta_points']:+.2f}",
            r["latency_ms"]["p50"],
            r["latency_ms"]["p99"],
            r["throughput_ips"],
            f"{r['speedup_vs_baseline_onnx']:.2f}x",
            f"{r['speedup_vs_torch_eager']:.2f}x" if r["speedup_vs_torch_eager"] else None,
            (f"{r['speedup_vs_unpruned_int8']:.2f}x" + (" SLOWER" if r["slower_than_unpruned_int8"] else ""))
            if r.get("speedup_vs_unpruned_int8") is not None
            else None,
        )
        for r in report["variants"]
    ]
    print_table(
        f"variants on {report['n_images']:,} images; {report['threads']} threads; "
        f"baseline {report['baseline']} on {report['baseline_runtime']} (its fastest FP32 runtime)",
        [
            "model",
            "runtime",
            "ONNX B",
            "gzip B",
            "params",
            "MACs",
            "top-1 %",
            "Δ pts",
            "p50 ms",
            "p99 ms",
            "img/s @256",
            "vs ONNX",
            "vs torch",
            "vs INT8",
        ],
        rows,
    )
    if report.get("torch_eager_fp32_throughput_ips"):
        print(f"PyTorch eager FP32 baseline: {report['torch_eager_fp32_throughput_ips']:,.0f} img/s at batch 256")
    _print_notes(report)


def _print_notes(report: dict[str, Any]) -> None:
    """Under the table: the machine, compression that does not pay, skipped runs, each card's notes."""
    if m := report.get("machine"):
        isa = ", ".join(m["isa"]) or "no SIMD flags read"
        print(
            f"measured on: {m['cpu']} ({m['logical_cores']} logical cores; {isa}); {'; '.join(report['runtimes'])}. "
            "Speed-ups are ratios on this machine: VNNI/AMX decide INT8's gain."
        )
    slower = [r for r in report["variants"] if r.get("slower_than_unpruned_int8")]
    for r in slower:
        print(f"- {r['file']} on {r['runtime']}: slower than the unpruned INT8 there "
              f"({r['speedup_vs_unpruned_int8']:.2f}x): compression that does not pay on this runtime")  # fmt: skip
    for skip in report.get("skipped", []):
        print(f"- {skip['file']} not run on {skip['runtime']}: {skip['reason']}")
    noted = set()
    for r in report["variants"]:
        for note in r["notes"]:
            if (r["file"], note) not in noted:  # the same card note on every runtime's row: print it once
                noted.add((r["file"], note))
                print(f"- {r['file']}: {note}")


def write_report(report: dict[str, Any], json_path: Path, png_path: Path) -> None:
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, png_path)
