"""``edgeloop train``: train a model, write its checkpoint and a model card with every stage."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from host.factory import card, checkpoint, models
from host.factory.checkpoint import Checkpoint
from host.factory.layout import channels_last, contiguous
from host.factory.predict import predict_torch, top1
from host.factory.stats import count_macs, count_params
from host.factory.train.config import TrainConfig
from host.factory.train.data import load_split
from host.factory.train.loop import Hooks, fit
from host.factory.train.losses import distill_loss
from shared.datasets import LabelledImages
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)


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
    prep = Preprocessing()
    t0 = time.perf_counter()
    t_ckpt = checkpoint.load(teacher) if teacher is not None else None  # a bad path fails before decoding
    train = load_split(data, None, "train")
    val = load_split(val_data, train.classes, "val") if val_data else None
    log.info("training %s on %d images (%d classes)", arch, len(train), len(train.classes))
    model = models.build(arch, num_classes=len(train.classes))
    stages = _continue_from(init, model, arch, train.classes) if init is not None else []
    hooks, distillation = None, None
    if teacher is not None and t_ckpt is not None:
        hooks, distillation = _distillation(teacher, t_ckpt, train.classes, cfg, kd_temperature, kd_alpha)
    work_dir = work_dir or Path(".edgeloop") / "runs" / out.stem
    log_path = _training_log(out, fresh=not resume and init is None)
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
    checkpoint.save(checkpoint.from_model(model, arch, train.classes, prep, metrics), out)
    stages.append(_stage(cfg, round(time.perf_counter() - t0, 1), distillation))
    info = _card(out, arch, model, prep, train, data, cfg, metrics, log_path, stages)
    card.write_card(card.card_path(out), info)
    return info


def _training_log(out: Path, fresh: bool) -> Path:
    """``<out>.train.jsonl``, emptied for a fresh run (a resumed or continued run appends to it)."""
    log_path = out.with_suffix(".train.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if fresh and log_path.exists():
        log_path.unlink()
    return log_path


def _stage(cfg: TrainConfig, wall_time_s: float, distillation: dict[str, Any] | None) -> dict[str, Any]:
    """What the card records of this run, beside the earlier stages of the same model."""
    stage: dict[str, Any] = {
        "command": card.invocation(),
        "epochs": cfg.epochs,
        "config": cfg.model_dump(),
        "wall_time_s": wall_time_s,
    }
    if distillation is not None:
        stage["distillation"] = distillation
    return stage


def _continue_from(init: Path, model: nn.Module, arch: str, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Load ``init``'s weights into ``model``; returns the training stages its card recorded."""
    start = checkpoint.load(init)
    if start.arch != arch or start.classes != classes:
        raise EdgeloopError(f"{init} is a {start.arch} over {len(start.classes)} classes, not this {arch}")
    model.load_state_dict(start.state_dict)
    stages: list[dict[str, Any]] = []
    prior = card.card_path(init)
    if prior.exists():
        old = card.read_card(prior)
        stages = old.get("stages") or [{k: old.get(k) for k in ("command", "epochs", "config", "wall_time_s")}]
    log.info("continuing from %s (%d earlier stage(s))", init, len(stages))
    return stages


def _distillation(
    teacher: Path, t_ckpt: Checkpoint, classes: tuple[str, ...], cfg: TrainConfig, temperature: float, alpha: float
) -> tuple[Hooks, dict[str, Any]]:
    """The distillation loss from ``teacher`` and what the card records about it."""
    if t_ckpt.classes != classes:
        raise EdgeloopError(f"teacher {teacher} was trained on other classes: {t_ckpt.classes}")
    t_model = t_ckpt.build()
    if cfg.channels_last:
        t_model = channels_last(t_model)
    hooks = Hooks(loss_fn=distill_loss(t_model, temperature, alpha, cfg.label_smoothing))
    record = {
        "teacher": str(teacher),
        "teacher_arch": t_ckpt.arch,
        "teacher_top1": t_ckpt.metrics.get("top1"),
        "temperature": temperature,
        "alpha": alpha,
    }
    log.info("distilling from %s (%s, top-1 %s)", teacher, t_ckpt.arch, t_ckpt.metrics.get("top1"))
    return hooks, record


def _card(
    out: Path,
    arch: str,
    model: nn.Module,
    prep: Preprocessing,
    train: LabelledImages,
    data: str,
    cfg: TrainConfig,
    metrics: dict[str, Any],
    log_path: Path,
    stages: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
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
