"""Drift benchmark: input drift and label drift of clean and shifted footage, served in folder order (one
class after another, as a camera watching one scene sees) and shuffled.

    python benchmarks/drift.py --data TEST [--model host/zoo/resnet20.onnx] [--window 500] [--shifted DIR]

TEST is the 10,000-image CIFAR-10 test split (an ImageFolder). The shifted copies are made with the
project's own ``edgeloop data shift TEST --out DIR/PRESET --preset PRESET --seed 0`` (or taken from
``--shifted DIR`` when they are there). The model's own reference (its ``edgeloop.drift_reference``
metadata) is what every window of ``--window`` consecutive images is scored against, as
``shared.drift.score`` scores a device's window. Reported per set and order: windows, input drift
(min / median / max), label drift, how many windows were flagged, the statistic that moved most, and
the one mixed score the device sent before the split (``old_score``). Also: what the statistics cost
per served image (perf_counter, warm-up, percentiles). Writes JSON (default benchmarks/drift-result.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine import sysinfo
from device.engine.reference import softmax, summary_from_meta
from device.engine.runtimes import open_onnx
from host.factory.field.presets import PRESET_NAMES
from host.table import print_table
from shared import datasets, drift, imaging, inputstats
from shared.drift import DriftScore, Summary
from shared.modelmeta import read_meta


def shifted_sets(data: Path, root: Path) -> dict[str, Path]:
    """Every preset's copy of ``data`` under ``root``, made with `edgeloop data shift` where missing."""
    out = {}
    for name in PRESET_NAMES:
        dest = root / name
        if not (dest / "shift.json").exists():
            argv = [sys.executable, "-m", "host.cli", "data", "shift", str(data), "--out", str(dest), "--preset", name]
            subprocess.run([*argv, "--seed", "0"], cwd=REPO, check=True, capture_output=True, timeout=3600)
        out[name] = dest
    return out


def old_score(s: DriftScore) -> float:
    """The one score devices sent before input and label drift were split (class mix and confidence in it)."""
    return max(s.psi_confidence / drift.PSI_ALARM, s.psi_class / drift.PSI_ALARM,
               s.channel_shift / drift.SHIFT_ALARM, s.detail_shift / drift.SHIFT_ALARM)  # fmt: skip


def windows(reference: Summary, images: np.ndarray, probs: np.ndarray, window: int) -> list[DriftScore]:
    n = probs.shape[1]
    starts = range(0, len(images) - window + 1, window)
    return [drift.score(reference, drift.summarize_images(images[s : s + window], probs[s : s + window], n))
            for s in starts]  # fmt: skip


def describe(scores: list[DriftScore]) -> dict[str, Any]:
    inputs = [s.input_drift for s in scores]
    labels = [s.label_drift for s in scores]
    top = Counter(max(s.input_shifts, key=s.input_shifts.__getitem__) for s in scores if max(s.input_shifts.values()))
    return {
        "windows": len(scores),
        "input_drift": {"min": min(inputs), "median": statistics.median(inputs), "max": max(inputs)},
        "label_drift": {"min": min(labels), "median": statistics.median(labels), "max": max(labels)},
        "flagged": sum(x >= drift.DEFAULT_THRESHOLD for x in inputs),
        "old_score": {"min": min(map(old_score, scores)), "max": max(map(old_score, scores))},
        "old_flagged": sum(old_score(s) >= drift.DEFAULT_THRESHOLD for s in scores),
        "moved_most": dict(top.most_common()),
    }


def stamped_reference(model: Path) -> Summary:
    reference = summary_from_meta(read_meta(model))
    if reference is None or reference.inputs is None:
        raise SystemExit(f"{model} has no drift reference with input statistics: edgeloop data reference {model}")
    return reference


def measure(model: Path, sets: dict[str, Path], window: int) -> dict[str, Any]:
    """Each set in folder order and shuffled (seed 0), scored against ``model``'s stamped reference."""
    meta = read_meta(model)
    reference = stamped_reference(model)
    out: dict[str, Any] = {}
    with open_onnx("onnxruntime", model) as rt:
        for name, path in sets.items():
            images = datasets.load_labelled(path, classes=meta.classes).images
            probs = np.concatenate([softmax(rt.infer(imaging.normalize(images[i : i + 500], meta.preprocessing)))
                                    for i in range(0, len(images), 500)])  # fmt: skip
            order = np.random.default_rng(0).permutation(len(images))
            out[name] = {
                "images": len(images),
                "folder_order": describe(windows(reference, images, probs, window)),
                "shuffled": describe(windows(reference, images[order], probs[order], window)),
            }
            print(f"{name}: done", flush=True)
    return out


def cost(data: Path, batch: int = 16, repeats: int = 200) -> dict[str, Any]:
    """Microseconds per served image of the per-image drift statistics on a batch (what the device's drift
    monitor adds to each batch it serves), now and before the split."""
    images = datasets.decode_all(datasets.list_samples(data)[:batch], size=32)

    def timed(fn: Any) -> dict[str, float]:
        for _ in range(20):  # warm-up
            fn(images)
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(images)
            t.append((time.perf_counter() - t0) / batch * 1e6)
        q = np.percentile(t, [50, 90, 99])
        return {"p50_us": float(q[0]), "p90_us": float(q[1]), "p99_us": float(q[2])}

    return {
        "batch": batch,
        "now": timed(lambda x: (inputstats.image_stats(x), drift.detail(x))),
        # as the device computed them before the split: channel means by numpy's mean over axes (1, 2)
        "before": timed(lambda x: (x.mean(axis=(1, 2), dtype=np.float64) / 255.0, drift.detail(x))),
    }


def _table(result: dict[str, Any]) -> None:
    rows = []
    for name, r in result["sets"].items():
        for order in ("folder_order", "shuffled"):
            o = r[order]
            rows.append((name, order.replace("_", " "), o["windows"], o["input_drift"]["min"], o["input_drift"]["max"],
                         f"{o['flagged']}/{o['windows']}", o["label_drift"]["min"], o["label_drift"]["max"],
                         o["old_score"]["max"], f"{o['old_flagged']}/{o['windows']}"))  # fmt: skip
    print_table(
        f"drift, windows of {result['window']} (threshold {result['threshold']})",
        ["set", "order", "windows", "input min", "input max", "flagged", "label min", "label max", "old score max",
         "old flagged"],
        rows,
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="the CIFAR-10 test split (ImageFolder)")
    ap.add_argument("--model", type=Path, default=REPO / "host" / "zoo" / "resnet20.onnx")
    ap.add_argument("--window", type=int, default=500, help="images per scored window (the device's default)")
    ap.add_argument("--shifted", type=Path, help="where the preset copies are, or are made (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "drift-result.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"clean": args.data, **shifted_sets(args.data, args.shifted or Path(tmp))}
        measured = measure(args.model, sets, args.window)
    result = {
        "machine": sysinfo.machine(),
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "reference_images": stamped_reference(args.model).n_images,
        "window": args.window,
        "threshold": drift.DEFAULT_THRESHOLD,
        "statistics": list(inputstats.STATS),
        "tolerance_z": inputstats.TOLERANCE_Z,
        "sets": measured,
        "cost_per_image": cost(args.data),
        "command": f"python benchmarks/drift.py --data {args.data} --window {args.window}",
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
