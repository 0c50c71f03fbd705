"""Training: SGD + cosine/one-cycle schedule, crop+flip augmentation, label smoothing.

``fit`` is the one training loop of the project. ``edgeloop train`` calls it from scratch, and the
compression steps call it for sparsity training, fine-tuning and distillation through ``Hooks``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

from host.factory.evaluate import predict_torch, to_input, top1
from host.factory.layout import channels_last, contiguous
from shared.datasets import LabelledImages
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
ModelHook = Callable[[nn.Module], None]


@functools.cache
def fast_bf16() -> bool:
    """Whether bfloat16 autocast speeds up training on this CPU.

    Measured on the project's machines: with AMX it was the faster setting; on a Xeon with
    AVX512-BF16 but no AMX, ResNet-20 took ~121 s per epoch in bf16 against ~100 s in FP32.
    """
    from device.sysinfo import machine

    isa = machine()["isa"]
    return isinstance(isa, list) and "amx_bf16" in isa


class TrainConfig(BaseModel):
    """How to train; every field is recorded in the model card."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(120, ge=1, description="passes over the training set")
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(0.1, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    cutout: int = Field(0, ge=0, le=32, description="side of a random square blanked per image (0: off)")
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(2.0, ge=0, description="linear warm-up (cosine schedule)")
    seed: int = 0
    bf16: bool = Field(
        default_factory=fast_bf16,
        description="bfloat16 autocast; default on only where the CPU has AMX (elsewhere it is slower than FP32)",
    )
    channels_last: bool = True
    swa_start: int | None = Field(
        None, ge=0, description="Stochastic Weight Averaging from this epoch on (None: off); the result is the average"
    )
    swa_lr: float = Field(0.01, gt=0, description="learning rate held constant while weights are averaged")

    @model_validator(mode="after")
    def _swa_inside_run(self) -> TrainConfig:
        if self.swa_start is not None and self.swa_start >= self.epochs:
            raise ValueError(f"swa_start ({self.swa_start}) must be below epochs ({self.epochs})")
        if self.swa_start is not None and self.schedule != "cosine":
            raise ValueError("SWA anneals with the cosine schedule; use schedule 'cosine' with swa_start")
        return self


@dataclass
class Hooks:
    """Points where compression steps change the loop without copying it."""

    loss_fn: LossFn | None = None  # (model, x, y) -> (loss, logits); default CE + label smoothing
    after_backward: ModelHook | None = None  # e.g. L1 subgradient on BN scales (Network Slimming)
    after_step: ModelHook | None = None  # e.g. re-apply a sparsity mask


class CropFlip:
    """Random 32x32 crop of a 4-pixel zero-padded image plus horizontal flip, done per batch in torch."""

    def __init__(self, images: npt.NDArray[np.uint8], pad: int = 4, cutout: int = 0,
                 fill: tuple[int, int, int] = (125, 123, 114)) -> None:  # fmt: skip
        self.pad = pad
        self.cutout = cutout
        self.fill = torch.tensor(fill, dtype=torch.uint8)
        self.size = images.shape[1]
        self.padded = torch.from_numpy(np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0))))

    def __call__(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = idx.shape[0]
        oy = torch.randint(0, 2 * self.pad + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * self.pad + 1, (b,), generator=gen)
        ar = torch.arange(self.size)
        rows = (oy[:, None] + ar)[:, :, None]
        cols = (ox[:, None] + ar)[:, None, :]
        flip = torch.rand(b, generator=gen) < 0.5
        cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
        out: torch.Tensor = self.padded[idx[:, None, None], rows, cols]
        if self.cutout:
            # Cutout (DeVries & Taylor 2017): blank a random square (centre may sit near the edge)
            # with the dataset's mean colour, which normalises to about zero
            cy = torch.randint(0, self.size, (b,), generator=gen)
            cx = torch.randint(0, self.size, (b,), generator=gen)
            half = self.cutout // 2
            ys = (ar[None, :] >= (cy - half)[:, None]) & (ar[None, :] < (cy + half)[:, None])
            xs = (ar[None, :] >= (cx - half)[:, None]) & (ar[None, :] < (cx + half)[:, None])
            mask = ys[:, :, None] & xs[:, None, :]
            out = torch.where(mask[..., None], self.fill, out)
        return out


def default_loss(label_smoothing: float) -> LossFn:
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing), logits

    return loss_fn


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.swa_start is not None:
        # SWA (Izmailov et al. 2018): the schedule anneals to swa_lr by swa_start, then holds it
        # while the weights are averaged once per epoch
        anneal_end = max(warm + 1, cfg.swa_start * steps_per_epoch)
        floor = cfg.swa_lr / cfg.lr

        def swa_factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if step >= anneal_end:
                return floor
            cos = 0.5 * (1 + math.cos(math.pi * (step - warm) / (anneal_end - warm)))
            return floor + (1 - floor) * cos

        return swa_factor

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "onecycle":
            # triangular up for 30% of the run, cosine down to 0 (Smith & Topin 2019)
            up = max(1, int(0.3 * total))
            if step < up:
                return 0.04 + 0.96 * step / up
            return 0.5 * (1 + math.cos(math.pi * (step - up) / max(1, total - up)))
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    aug = CropFlip(train.images, cutout=cfg.cutout)
    labels = torch.from_numpy(train.labels)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    swa = AveragedModel(model) if cfg.swa_start is not None else None
    if resume and state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)  # our own file
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        history = state["history"]
        start_epoch = state["epoch"]
        if swa is not None and state.get("swa") is not None:
            swa.load_state_dict(state["swa"])
        log.info("resumed %s from %s at epoch %d", desc, state_path, start_epoch)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0, disable=None)
        for step in bar:
            idx = perm[step * batch : (step + 1) * batch]
            x = to_input(aug(idx, gen), prep)
            y = labels[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, logits = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hooks.after_backward is not None:
                hooks.after_backward(model)
            opt.step()
            sched.step()
            if hooks.after_step is not None:
                hooks.after_step(model)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": round(loss_sum / max(1, seen), 5),
            "train_acc": round(correct / max(1, seen), 5),
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if val is not None:
            record["val_top1"] = round(top1(predict_torch(model, val.images, prep), val.labels), 5)
        if swa is not None and cfg.swa_start is not None and epoch + 1 > cfg.swa_start:
            swa.update_parameters(model)
            record["swa_averaged"] = int(swa.n_averaged)
        history.append(record)
        log.info("%s epoch %s", desc, json.dumps(record))
        if log_path is not None:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if state_path is not None:
            _save_state(state_path, model, opt, sched, gen, history, epoch + 1, swa)
    if swa is not None and int(swa.n_averaged) > 0:
        _adopt_average(model, swa, aug, batch, gen, prep)
        if val is not None:
            history[-1]["swa_val_top1"] = round(top1(predict_torch(model, val.images, prep), val.labels), 5)
            log.info(
                "%s SWA average of %d epochs: val top-1 %.4f", desc, int(swa.n_averaged), history[-1]["swa_val_top1"]
            )
    model.eval()
    return history


def _adopt_average(
    model: nn.Module,
    swa: AveragedModel,
    aug: CropFlip,
    batch: int,
    gen: torch.Generator,
    prep: Preprocessing,
) -> None:
    """Copy the averaged weights into ``model`` after recomputing BatchNorm statistics for them:
    averaged weights need their own running mean/var, which one pass over the training set gives."""
    n = aug.padded.shape[0]
    perm = torch.randperm(n, generator=gen)
    batches = (to_input(aug(perm[i : i + batch], gen), prep) for i in range(0, n - batch + 1, batch))
    update_bn(batches, swa)
    model.load_state_dict(swa.module.state_dict())


def _save_state(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    history: list[dict[str, Any]],
    epoch: int,
    swa: AveragedModel | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "history": history,
            "epoch": epoch,
            "swa": swa.state_dict() if swa is not None else None,
        },
        tmp,
    )
    os.replace(tmp, path)


def load_split(spec: str, classes: tuple[str, ...] | None, desc: str, size: int = 32) -> LabelledImages:
    """Decode a labelled set into memory once (the training loop then never touches the disk)."""
    from shared import datasets

    samples = datasets.list_samples(spec)
    classes = classes or datasets.class_names(samples)
    labels = datasets.label_indices(samples, classes)
    with tqdm(total=len(samples), desc=f"decode {desc}", unit="img", disable=None) as bar:
        images = datasets.decode_all(samples, size=size, progress=bar.update)
    return LabelledImages(images=images, labels=labels, classes=classes)


def train_command(
    arch: str,
    data: str,
    out: Path,
    cfg: TrainConfig,
    val_data: str | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    init: Path | None = None,
    teacher: Path | None = None,
    kd_temperature: float = 4.0,
    kd_alpha: float = 0.9,
) -> dict[str, Any]:
    """``edgeloop train``: train (from scratch, or on from ``init``'s weights, e.g. a second cosine
    cycle), write ``out`` (checkpoint) and its JSON model card with every training stage recorded.

    With ``teacher``, the loss is knowledge distillation from that checkpoint (any architecture
    over the same classes) instead of plain cross-entropy."""
    from host.factory import card, checkpoint, models
    from host.factory.stats import count_macs, count_params

    prep = Preprocessing()
    t0 = time.perf_counter()
    t_ckpt = checkpoint.load(teacher) if teacher is not None else None  # a bad path fails before decoding
    train = load_split(data, None, "train")
    val = load_split(val_data, train.classes, "val") if val_data else None
    log.info("training %s on %d images (%d classes)", arch, len(train), len(train.classes))
    model = models.build(arch, num_classes=len(train.classes))
    stages: list[dict[str, Any]] = []
    if init is not None:
        start = checkpoint.load(init)
        if start.arch != arch or start.classes != train.classes:
            raise EdgeloopError(f"{init} is a {start.arch} over {len(start.classes)} classes, not this {arch}")
        model.load_state_dict(start.state_dict)
        prior = card.card_path(init)
        if prior.exists():
            old = card.read_card(prior)
            stages = old.get("stages") or [{k: old.get(k) for k in ("command", "epochs", "config", "wall_time_s")}]
        log.info("continuing from %s (%d earlier stage(s))", init, len(stages))
    hooks = None
    distillation: dict[str, Any] | None = None
    if t_ckpt is not None:
        from host.factory.compress.distill import distill_loss

        if t_ckpt.classes != train.classes:
            raise EdgeloopError(f"teacher {teacher} was trained on other classes: {t_ckpt.classes}")
        t_model = t_ckpt.build()
        if cfg.channels_last:
            t_model = channels_last(t_model)
        hooks = Hooks(loss_fn=distill_loss(t_model, kd_temperature, kd_alpha, cfg.label_smoothing))
        distillation = {
            "teacher": str(teacher),
            "teacher_arch": t_ckpt.arch,
            "teacher_top1": t_ckpt.metrics.get("top1"),
            "temperature": kd_temperature,
            "alpha": kd_alpha,
        }
        log.info("distilling from %s (%s, top-1 %s)", teacher, t_ckpt.arch, t_ckpt.metrics.get("top1"))
    work_dir = work_dir or Path(".edgeloop") / "runs" / out.stem
    log_path = out.with_suffix(".train.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if not resume and init is None and log_path.exists():
        log_path.unlink()
    history = fit(
        model,
        train,
        cfg,
        prep,
        val=val,
        hooks=hooks,
        state_path=work_dir / "train_state.pt",
        log_path=log_path,
        resume=resume,
        desc=arch,
    )
    model = contiguous(model).eval()
    metrics: dict[str, Any] = {"train_acc_last_epoch": history[-1]["train_acc"] if history else None}
    if val is not None:
        metrics.update(
            top1=top1(predict_torch(model, val.images, prep), val.labels), n_images=len(val), dataset=val_data
        )
    ckpt = checkpoint.from_model(model, arch, train.classes, prep, metrics)
    checkpoint.save(ckpt, out)
    wall = round(time.perf_counter() - t0, 1)
    stage: dict[str, Any] = {
        "command": card.invocation(),
        "epochs": cfg.epochs,
        "config": cfg.model_dump(),
        "wall_time_s": wall,
    }
    if distillation is not None:
        stage["distillation"] = distillation
    stages.append(stage)
    info: dict[str, Any] = {
        "name": out.stem,
        "arch": arch,
        "checkpoint": out.name,
        "classes": list(train.classes),
        "preprocessing": prep.to_dict(),
        "metrics": metrics,
        "params": count_params(model),
        "macs": count_macs(model),
        "epochs": sum(int(s.get("epochs") or 0) for s in stages),
        "wall_time_s": round(sum(float(s.get("wall_time_s") or 0) for s in stages), 1),
        "train_images": len(train),
        "train_data": data,
        "config": cfg.model_dump(),
        "training_log": log_path.name,
        "command": card.invocation(),
        "stages": stages,
    }
    card.write_card(card.card_path(out), info)
    return info
