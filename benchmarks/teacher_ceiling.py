"""How good a teacher the checkpoints at hand make: each alone, with flip test-time augmentation, and averaged.

    python benchmarks/teacher_ceiling.py --data TEST [CKPT.pt ...] [--out benchmarks/teacher-ceiling-result.json]

Default checkpoints: the zoo baseline and the self-distilled SWA candidate in benchmarks/baseline-kd-swa/.
Distillation rarely lifts a student past its teacher, so the best of these figures bounds what
``edgeloop train --teacher`` can reach from what is already trained. Softmax probabilities are
averaged (over the horizontal flip, and over the models).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine.sysinfo import machine
from host.factory import checkpoint
from host.factory.predict import predict_torch, top1
from shared.datasets import load_labelled

DEFAULT = [REPO / "host" / "zoo" / "resnet20.pt", REPO / "benchmarks" / "baseline-kd-swa" / "resnet20.pt"]


def _probs(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--data", required=True, help="labelled test set (ImageFolder dir or .tar.gz::test)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "teacher-ceiling-result.json")
    args = ap.parse_args()
    ckpts = [checkpoint.load(p) for p in args.checkpoints]
    classes = ckpts[0].classes
    if any(c.classes != classes for c in ckpts):
        raise SystemExit("the checkpoints do not share one class list")
    data = load_labelled(args.data, classes=classes)
    flipped = np.ascontiguousarray(data.images[:, :, ::-1])  # NHWC: reverse the width axis
    rows: dict[str, float] = {}
    probs, probs_tta = [], []
    for path, ck in zip(args.checkpoints, ckpts, strict=True):
        model = ck.build()
        p = _probs(predict_torch(model, data.images, ck.preprocessing))
        pf = _probs(predict_torch(model, flipped, ck.preprocessing))
        name = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
        rows[name] = top1(p, data.labels)
        rows[f"{name} + flip TTA"] = top1(p + pf, data.labels)
        probs.append(p)
        probs_tta.append(p + pf)
    if len(ckpts) > 1:
        rows["ensemble"] = top1(sum(probs), data.labels)
        rows["ensemble + flip TTA"] = top1(sum(probs_tta), data.labels)
    for k, v in rows.items():
        print(f"{v:.4f}  {k}")
    result = {"machine": machine(), "data": args.data, "n_images": len(data.labels), "top1": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
