"""The one training loop of the project: SGD with the configured schedule, crop+flip augmentation,
label smoothing, optional weight averaging (SWA), and state saved every epoch for ``--resume``.

``edgeloop train`` calls ``fit`` from scratch, and the compression steps call it for sparsity
training, fine-tuning and distillation through ``Hooks``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

from host.factory.layout import channels_last
from host.factory.predict import predict_torch, to_input, top1
from host.factory.train.augment import CropFlip
from host.factory.train.config import TrainConfig
from host.factory.train.losses import LossFn, default_loss
from host.factory.train.schedule import lr_lambda
from shared.datasets import LabelledImages
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)

ModelHook = Callable[[nn.Module], None]


@dataclass
class Hooks:
    """Points where compression steps change the loop without copying it."""

    loss_fn: LossFn | None = None  # (model, x, y) -> (loss, logits); default CE + label smoothing
    after_backward: ModelHook | None = None  # e.g. L1 subgradient on BN scales (Network Slimming)
    after_step: ModelHook | None = None  # e.g. re-apply a sparsity mask


@dataclass
class _Run:
    """What one run carries from epoch to epoch, and saves so that it can resume."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    aug: CropFlip
    labels: torch.Tensor
    steps: int
    batch: int
    swa: AveragedModel | None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    model: nn.Module,
    train: LabelledImages,
    cfg: TrainConfig,
    prep: Preprocessing,
    val: LabelledImages | None = None,
    hooks: Hooks | None = None,
    state_path: Path | None = None,
    log_path: Path | None = None,
    resume: bool = False,
    desc: str = "train",
    parameters: list[nn.Parameter] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place. Saves resumable state every epoch when ``state_path`` is given.

    Returns the per-epoch history (loss, train accuracy, validation top-1, lr, seconds).
    """
    hooks = hooks or Hooks()
    loss_fn = hooks.loss_fn or default_loss(cfg.label_smoothing)
    seed_everything(cfg.seed)
    if cfg.channels_last:
        model = channels_last(model)
    run = _start(model, train, cfg, parameters)
    if resume and state_path is not None and state_path.exists():
        _resume(run, state_path, desc)
    for epoch in range(run.start_epoch, cfg.epochs):
        record = _train_epoch(run, epoch, cfg, prep, loss_fn, hooks, desc)
        if val is not None:
            record["val_top1"] = round(top1(predict_torch(model, val.images, prep), val.labels), 5)
        if run.swa is not None and cfg.swa_start is not None and epoch + 1 > cfg.swa_start:
            run.swa.update_parameters(model)
            record["swa_averaged"] = int(run.swa.n_averaged)
        run.history.append(record)
        log.info("%s epoch %s", desc, json.dumps(record))
        if log_path is not None:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if state_path is not None:
            _save_state(state_path, run, epoch + 1)
    if run.swa is not None and int(run.swa.n_averaged) > 0:
        _adopt_average(run, prep, val, desc)
    model.eval()
    return run.history


def _start(model: nn.Module, train: LabelledImages, cfg: TrainConfig, parameters: list[nn.Parameter] | None) -> _Run:
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    n = len(train)
    steps = n // cfg.batch_size  # drop the last partial batch: BN statistics of tiny batches are noisy
    if steps == 0:
        steps, batch = 1, n
    else:
        batch = cfg.batch_size
    return _Run(
        model=model,
        opt=opt,
        sched=torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps)),
        gen=torch.Generator().manual_seed(cfg.seed),
        aug=CropFlip(train.images, cutout=cfg.cutout),
        labels=torch.from_numpy(train.labels),
        steps=steps,
        batch=batch,
        swa=AveragedModel(model) if cfg.swa_start is not None else None,
    )


def _train_epoch(
    run: _Run, epoch: int, cfg: TrainConfig, prep: Preprocessing, loss_fn: LossFn, hooks: Hooks, desc: str
) -> dict[str, Any]:
    """One pass over the training set; returns the epoch's record (before validation)."""
    t0 = time.perf_counter()
    model, batch = run.model, run.batch
    model.train()
    perm = torch.randperm(len(run.labels), generator=run.gen)
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(range(run.steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0, disable=None)
    for step in bar:
        idx = perm[step * batch : (step + 1) * batch]
        x = to_input(run.aug(idx, run.gen), prep)
        y = run.labels[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, logits = loss_fn(model, x, y)
        _optimise(run, loss, hooks)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return {
        "epoch": epoch + 1,
        "loss": round(loss_sum / max(1, seen), 5),
        "train_acc": round(correct / max(1, seen), 5),
        "lr": run.opt.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _optimise(run: _Run, loss: torch.Tensor, hooks: Hooks) -> None:
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if hooks.after_backward is not None:
        hooks.after_backward(run.model)
    run.opt.step()
    run.sched.step()
    if hooks.after_step is not None:
        hooks.after_step(run.model)


def _adopt_average(run: _Run, prep: Preprocessing, val: LabelledImages | None, desc: str) -> None:
    """Copy the averaged weights into the model after recomputing BatchNorm statistics for them:
    averaged weights need their own running mean/var, which one pass over the training set gives."""
    swa, aug, batch, gen = run.swa, run.aug, run.batch, run.gen
    if swa is None:
        return
    n = aug.padded.shape[0]
    perm = torch.randperm(n, generator=gen)
    batches = (to_input(aug(perm[i : i + batch], gen), prep) for i in range(0, n - batch + 1, batch))
    update_bn(batches, swa)
    run.model.load_state_dict(swa.module.state_dict())
    if val is not None:
        run.history[-1]["swa_val_top1"] = round(top1(predict_torch(run.model, val.images, prep), val.labels), 5)
        log.info(
            "%s SWA average of %d epochs: val top-1 %.4f", desc, int(swa.n_averaged), run.history[-1]["swa_val_top1"]
        )


def _resume(run: _Run, path: Path, desc: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    run.gen.set_state(state["generator"])
    run.history = state["history"]
    run.start_epoch = state["epoch"]
    if run.swa is not None and state.get("swa") is not None:
        run.swa.load_state_dict(state["swa"])
    log.info("resumed %s from %s at epoch %d", desc, path, run.start_epoch)


def _save_state(path: Path, run: _Run, epoch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": run.model.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "generator": run.gen.get_state(),
            "history": run.history,
            "epoch": epoch,
            "swa": run.swa.state_dict() if run.swa is not None else None,
        },
        tmp,
    )
    os.replace(tmp, path)
