"""What a compression step works on: the model, the data, the build directory, the products so far.

One ``Context`` lives for one ``edgeloop compress`` run. Steps change ``model`` in place or
replace it, add file names to ``outputs``, and leave facts for later steps (``onnx_fp32``,
``sparsity``); the pipeline appends each step's record to ``records``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from host.factory import checkpoint
from host.factory.checkpoint import Checkpoint
from host.factory.layout import channels_last
from host.factory.predict import predict_torch, top1
from host.factory.train import Hooks, TrainConfig, fit, load_split
from shared.datasets import LabelledImages
from shared.imaging import Preprocessing
from shared.modelmeta import ModelMeta


@dataclass
class Context:
    name: str  # the recipe's name: the base name of every file written
    seed: int
    source: Checkpoint
    model: nn.Module
    train_spec: str
    val_spec: str | None
    out: Path
    _train: LabelledImages | None = None
    _val: LabelledImages | None = None
    onnx_fp32: Path | None = None  # the verified FP32 export, once a step has written it
    sparsity: str = "dense"  # "2:4" once a step has imposed that pattern; the ONNX metadata says so
    outputs: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    trained: bool = False

    @property
    def prep(self) -> Preprocessing:
        return self.source.preprocessing

    @property
    def train(self) -> LabelledImages:
        if self._train is None:
            self._train = load_split(self.train_spec, self.source.classes, "train", self.prep.size)
        return self._train

    @property
    def val(self) -> LabelledImages | None:
        if self._val is None and self.val_spec:
            self._val = load_split(self.val_spec, self.source.classes, "val", self.prep.size)
        return self._val

    def teacher(self, spec: str) -> nn.Module:
        """``'source'`` (the input checkpoint) or the path of another checkpoint, ready to run."""
        ckpt = self.source if spec == "source" else checkpoint.load(spec)
        return channels_last(ckpt.build())

    def calibration_images(self, n: int) -> npt.NDArray[np.uint8]:
        """A class-balanced slice of the training set (never the test set)."""
        idx = _balanced_indices(self.train.labels, n)
        return self.train.images[idx]

    def evaluate(self, model: nn.Module | None = None) -> float | None:
        if self.val is None:
            return None
        return top1(predict_torch(model or self.model, self.val.images, self.prep), self.val.labels)

    def fit(
        self, model: nn.Module, cfg: TrainConfig, hooks: Hooks | None = None, desc: str = "train"
    ) -> list[dict[str, Any]]:
        """Train ``model`` on the training split; the epochs go to ``<name>.train.jsonl``."""
        history = fit(
            model,
            self.train,
            cfg,
            self.prep,
            val=None,
            hooks=hooks,
            log_path=self.out / f"{self.name}.train.jsonl",
            desc=desc,
        )
        self.trained = True
        return history

    def meta(self, precision: str = "fp32", **extra: str) -> ModelMeta:
        """The metadata an ONNX product of this run carries."""
        return ModelMeta(self.source.classes, self.prep, self.source.arch, precision, {"recipe": self.name, **extra})


def _balanced_indices(labels: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    take: list[int] = []
    i = 0
    while len(take) < min(n, len(labels)):
        for idx in per_class:
            if i < len(idx) and len(take) < n:
                take.append(idx[i])
        i += 1
    return np.asarray(sorted(take))
