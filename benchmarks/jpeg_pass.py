"""What one more JPEG pass costs: the controlled A/B behind the baseline's "JPEG data" explanation.

    python benchmarks/jpeg_pass.py degrade --src /tmp/cifar --out /tmp/cifar-x2
    edgeloop train --arch resnet20 --data /tmp/cifar/train    --val-data /tmp/cifar/test    --out A/r20.pt --epochs 20
    edgeloop train --arch resnet20 --data /tmp/cifar-x2/train --val-data /tmp/cifar-x2/test --out B/r20.pt --epochs 20
    python benchmarks/jpeg_pass.py compare A/r20.pt B/r20.pt [--out benchmarks/jpeg-pass-result.json]

The bundled CIFAR-10 is JPEG quality 75 with 4:2:0 chroma, so its lossless originals are not here
to train on. What can be measured is the slope: ``degrade`` gives every image one more, independent
q75 4:2:0 pass (the 8x8/16x16 block grid shifted by 4 pixels, so that the pass is not a near no-op
on already-quantised blocks) and stores the result losslessly as PNG. Training the same recipe
on both and comparing the test top-1 (each on its own test split) gives what one q75 pass costs
this network. ``compare`` collects both model cards and training logs into one JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine.sysinfo import machine
from host.factory import card

SHIFT = 4


def degrade(src: Path, out: Path, quality: int = 75) -> dict[str, Any]:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images under {src}")
    sq_err = 0.0
    n_px = 0
    for i, f in enumerate(files):
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot decode {f}")
        h, w = bgr.shape[:2]
        padded = cv2.copyMakeBorder(bgr, SHIFT, SHIFT, SHIFT, SHIFT, cv2.BORDER_REFLECT_101)
        ok, buf = cv2.imencode(".jpg", padded, params)
        if not ok:
            raise SystemExit(f"cannot encode {f}")
        again = cv2.imdecode(buf, cv2.IMREAD_COLOR)[SHIFT : SHIFT + h, SHIFT : SHIFT + w]
        sq_err += float(np.sum((again.astype(np.float64) - bgr.astype(np.float64)) ** 2))
        n_px += again.size
        dst = (out / f.relative_to(src)).with_suffix(".png")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), again)
        if (i + 1) % 10000 == 0:
            print(f"{i + 1}/{len(files)}", file=sys.stderr)
    psnr = 10 * np.log10(255.0**2 / (sq_err / n_px))
    return {"images": len(files), "quality": quality, "chroma": "4:2:0", "grid_shift_px": SHIFT, "psnr_db": psnr}


def _run(checkpoint: Path) -> dict[str, Any]:
    info = json.loads(card.card_path(checkpoint).read_text())
    log_path = checkpoint.with_name(info.get("training_log") or "")
    history = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    return {
        "checkpoint": str(checkpoint),
        "train_data": info.get("train_data"),
        "top1": info["metrics"]["top1"],
        "test_data": info["metrics"].get("dataset"),
        "epochs": info.get("epochs"),
        "command": info.get("command"),
        "val_top1_by_epoch": [r.get("val_top1") for r in history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("degrade", help="one more shifted JPEG q75 4:2:0 pass over an ImageFolder tree, as PNG")
    d.add_argument("--src", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--quality", type=int, default=75)
    c = sub.add_parser("compare", help="collect the A (as bundled) and B (one more pass) runs into one JSON")
    c.add_argument("a", type=Path, help="checkpoint trained and tested on the bundled data")
    c.add_argument("b", type=Path, help="checkpoint trained and tested on the degraded copy")
    c.add_argument("--degrade-json", type=Path, help="the degrade step's output, to record its PSNR")
    c.add_argument("--out", type=Path, default=REPO / "benchmarks" / "jpeg-pass-result.json")
    args = ap.parse_args()
    if args.cmd == "degrade":
        info = degrade(args.src, args.out, args.quality)
        print(json.dumps(info, indent=2))
        return
    a, b = _run(args.a), _run(args.b)
    result = {
        "machine": machine(),
        "degrade": json.loads(args.degrade_json.read_text()) if args.degrade_json else None,
        "a_as_bundled": a,
        "b_one_more_pass": b,
        "top1_cost_of_one_more_pass": round(a["top1"] - b["top1"], 4),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"A (as bundled): {a['top1']:.4f}   B (+1 q75 pass): {b['top1']:.4f}   cost {a['top1'] - b['top1']:+.4f}")


if __name__ == "__main__":
    main()
