"""The field table of issue 14: what each field shift costs, and what re-calibration and adaptation win back.

    python benchmarks/field_table.py --train TRAIN --test TEST [--presets night,dusk,...] [--epochs N] [--images N]
        [--out benchmarks/field-table-result.json] [--redo]

TRAIN and TEST are the two halves of cifar10-jpeg.tar.gz (unpacked folders, or archive::train / ::test).

For each shift preset, on a seeded shifted copy of the full CIFAR-10 test set (``shift_images(test,
preset, seed=0)``: the same pixels as ``edgeloop data shift TEST --preset P --seed 0``), from the zoo
baseline (host/zoo/resnet20.pt / .onnx):

* FP32;
* INT8 with the clean calibration: a fresh calibration with ``device.engine.calibration`` (the form
  ``forms.choose`` picks for ONNX Runtime on this CPU, the method of ``edgeloop-agent calibrate``)
  on 1,000 clean training images; the zoo's own resnet20-int8.onnx is measured beside it;
* INT8 re-calibrated on 1,000 shifted images disjoint from the evaluation images: 1,000 training
  images (class-balanced, seeded), shifted with another seed. The same 1,000 images, unlabelled,
  are the field samples of the next rows;
* AdaBN: the FP32 model with its BatchNorm statistics re-estimated on those field samples;
* adapted FP32: ``edgeloop adapt``'s pipeline (estimate, fine-tune, verified BN-folded export);
* adapted + INT8: the adapted ONNX calibrated on the field samples, as ``edgeloop-agent calibrate`` would;
* every row's top-1 on the clean test set too.

Results are written after each preset (a crash keeps the finished ones; a re-run skips them unless
``--redo``), with the machine, CPU and ISA, and one table per preset is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine import sysinfo
from device.engine.calibration import forms
from device.engine.calibration.quantize import quantize
from device.engine.runtimes import open_onnx
from host.factory import checkpoint
from host.factory.checkpoint import Checkpoint
from host.factory.field.adapt import AdaptSettings, adapt_model, training_subset
from host.factory.field.adapt_bn import adabn
from host.factory.field.adapt_command import write
from host.factory.field.presets import PRESET_NAMES
from host.factory.field.shift import shift_images
from host.factory.predict import predict_torch, top1
from host.factory.train.data import load_split
from host.table import print_table
from shared import imaging
from shared.datasets import LabelledImages
from shared.modelmeta import read_meta

log = logging.getLogger("field_table")

ZOO = REPO / "host" / "zoo"
N_FIELD = 1000
FIELD_SEED, TEST_SEED, SUBSET_SEED = 1, 0, 123
METHOD = "percentile"  # edgeloop-agent calibrate's default


@dataclass
class Setup:
    ckpt: Checkpoint
    train: LabelledImages
    test: LabelledImages
    clean_calib: npt.NDArray[np.uint8]  # 1,000 clean training images
    form: forms.Choice
    work: Path
    settings: AdaptSettings


def onnx_top1(path: Path, precision: str, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]) -> float:
    """Top-1 (%) of an ONNX file on ONNX Runtime's CPU provider, as a device runs it."""
    prep = read_meta(path).preprocessing
    with open_onnx("onnxruntime", path, precision) as rt:
        preds = np.concatenate(
            [rt.infer(imaging.normalize(images[i : i + 500], prep)).argmax(1) for i in range(0, len(images), 500)]
        )
    return round(100 * float((preds == labels).mean()), 2)


def calibrate(fp32: Path, out: Path, images: npt.NDArray[np.uint8], form: forms.Choice) -> float:
    t0 = time.perf_counter()
    quantize(fp32, out, images, form.form, "onnxruntime", METHOD, calibration="field-table")
    return round(time.perf_counter() - t0, 1)


def both(path: Path, precision: str, shifted: npt.NDArray[np.uint8], s: Setup) -> dict[str, float]:
    return {
        "shifted": onnx_top1(path, precision, shifted, s.test.labels),
        "clean": onnx_top1(path, precision, s.test.images, s.test.labels),
    }


def run_preset(name: str, s: Setup, clean_rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    prep, model = s.ckpt.preprocessing, s.ckpt.build()
    shifted = shift_images(s.test.images, name, seed=TEST_SEED)
    field = shift_images(s.clean_calib, name, seed=FIELD_SEED)
    d = s.work / name
    d.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, float]] = {}
    rows["fp32"] = {"shifted": onnx_top1(ZOO / "resnet20.onnx", "fp32", shifted, s.test.labels), **clean_rows["fp32"]}
    for key, path in (("int8_clean_calibration", s.work / "clean-int8.onnx"), ("int8_zoo", ZOO / "resnet20-int8.onnx")):
        rows[key] = {"shifted": onnx_top1(path, "int8", shifted, s.test.labels), **clean_rows[key]}
    recal_s = calibrate(ZOO / "resnet20.onnx", d / "recal-int8.onnx", field, s.form)
    rows["int8_recalibrated"] = both(d / "recal-int8.onnx", "int8", shifted, s)
    bn = adabn(model, field, prep)
    rows["adabn_fp32"] = {
        "shifted": round(100 * top1(predict_torch(bn, shifted, prep), s.test.labels), 2),
        "clean": round(100 * top1(predict_torch(bn, s.test.images, prep), s.test.labels), 2),
    }
    adapted = adapt_model(model, field, s.train, prep, s.settings)
    t_export = time.perf_counter()
    files = write(adapted, s.ckpt, ZOO / "resnet20.pt", d / "adapted.onnx", None)
    export_s = round(time.perf_counter() - t_export, 1)
    rows["adapted_fp32"] = both(d / "adapted.onnx", "fp32", shifted, s)
    adapted_cal_s = calibrate(d / "adapted.onnx", d / "adapted-int8.onnx", field, s.form)
    rows["adapted_int8"] = both(d / "adapted-int8.onnx", "int8", shifted, s)
    return {
        "preset": name,
        "rows": rows,
        "bars": bars(rows, name),
        "estimate": adapted.estimate.to_dict(),
        "history": adapted.history,
        "parity": files["parity"],
        "seconds": {**adapted.seconds, "export_s": export_s, "recalibration_s": recal_s,
                    "adapted_calibration_s": adapted_cal_s, "preset_total_s": round(time.perf_counter() - t0, 1)},
    }  # fmt: skip


def bars(rows: dict[str, dict[str, float]], name: str) -> dict[str, Any]:
    fp32, recal = rows["fp32"]["shifted"], rows["int8_recalibrated"]["shifted"]
    cost = rows["fp32"]["clean"] - fp32
    gain = rows["adapted_int8"]["shifted"] - fp32
    out: dict[str, Any] = {
        "recalibrated_int8_minus_fp32": round(recal - fp32, 2),
        "recalibrated_within_0.3_of_fp32": abs(recal - fp32) <= 0.3,
        "recalibrated_not_below_clean_calibration": recal >= rows["int8_clean_calibration"]["shifted"],
        "shift_cost_points": round(cost, 2),
        "adapted_int8_gain_points": round(gain, 2),
        "adabn_gain_points": round(rows["adabn_fp32"]["shifted"] - fp32, 2),
        "adapted_beats_adabn": rows["adapted_fp32"]["shifted"] > rows["adabn_fp32"]["shifted"],
        "recovered_fraction_of_cost": round(gain / cost, 3) if cost > 0 else None,
        "adapted_clean_loss_points": round(rows["fp32"]["clean"] - rows["adapted_fp32"]["clean"], 2),
        "adapted_clean_loss_at_most_1.5": rows["fp32"]["clean"] - rows["adapted_fp32"]["clean"] <= 1.5,
    }
    if name == "night":
        out["night_adapted_int8_at_least_3_above_fp32"] = gain >= 3.0
        out["night_half_of_cost_recovered"] = gain >= cost / 2
    return out


ROW_NAMES = {
    "fp32": "FP32 (zoo resnet20.onnx)",
    "int8_clean_calibration": "INT8, clean calibration (fresh, 1,000 clean train images)",
    "int8_zoo": "INT8, zoo resnet20-int8.onnx (the shipped file)",
    "int8_recalibrated": "INT8 re-calibrated on 1,000 shifted train images",
    "adabn_fp32": "AdaBN (FP32, BN statistics of the 1,000 field samples)",
    "adapted_fp32": "adapted FP32 (edgeloop adapt)",
    "adapted_int8": "adapted + INT8 (calibrated on the field samples)",
}


def print_preset(r: dict[str, Any]) -> None:
    fp32 = r["rows"]["fp32"]["shifted"]
    rows = [(ROW_NAMES[k], v["shifted"], v["shifted"] - fp32, v["clean"]) for k, v in r["rows"].items()]
    print_table(f"{r['preset']}: top-1 (%), CIFAR-10 test (10,000)", ["model", "shifted", "Δ vs FP32", "clean"], rows)
    print("  bars:", json.dumps(r["bars"]))


def setup(args: argparse.Namespace) -> tuple[Setup, dict[str, dict[str, float]]]:
    ckpt = checkpoint.load(ZOO / "resnet20.pt")
    train = load_split(args.train, ckpt.classes, "train")
    test = load_split(args.test, ckpt.classes, "test")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("images", args.images)) if v is not None}
    s = Setup(ckpt, train, test, training_subset(train, N_FIELD, SUBSET_SEED).images,
              forms.choose("onnxruntime", gpu=False), work, AdaptSettings(**overrides))  # fmt: skip
    calibrate(ZOO / "resnet20.onnx", work / "clean-int8.onnx", s.clean_calib, s.form)
    clean = {
        "fp32": {"clean": onnx_top1(ZOO / "resnet20.onnx", "fp32", test.images, test.labels)},
        "int8_clean_calibration": {"clean": onnx_top1(work / "clean-int8.onnx", "int8", test.images, test.labels)},
        "int8_zoo": {"clean": onnx_top1(ZOO / "resnet20-int8.onnx", "int8", test.images, test.labels)},
    }
    return s, clean


def save(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESET_NAMES), help="comma-separated (default: all)")
    ap.add_argument("--train", required=True, help="the 50,000 labelled training images")
    ap.add_argument("--test", required=True, help="the 10,000 labelled test images")
    ap.add_argument("--epochs", type=int, help="adaptation epochs (default: AdaptSettings)")
    ap.add_argument("--images", type=int, help="adaptation training images (default: AdaptSettings)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "edgeloop-field-table"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "field-table-result.json")
    ap.add_argument("--redo", action="store_true", help="run the --presets again even if --out has them")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import onnxruntime
    import torch

    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    s, clean = setup(args)
    result.update(
        machine=sysinfo.machine(), onnxruntime=onnxruntime.__version__, torch=torch.__version__,
        int8_form={"form": s.form.form.describe(), "why": s.form.reason, "method": METHOD},
        settings=s.settings.model_dump(), field_samples=f"{N_FIELD} class-balanced train images, shifted with seed "
        f"{FIELD_SEED}", evaluation=f"the 10,000 test images, shifted with seed {TEST_SEED}",
    )  # fmt: skip
    result.setdefault("presets", {})
    for name in args.presets.split(","):
        if name in result["presets"] and not args.redo:
            log.info("%s is done already (use --redo to run it again)", name)
            continue
        result["presets"][name] = run_preset(name, s, clean)
        save(args.out, result)
        print_preset(result["presets"][name])
    for r in result["presets"].values():
        print_preset(r)


if __name__ == "__main__":
    main()
