"""Field adaptation: fine-tune a model on the clean labelled training set degraded like the field.

The field's degradation is estimated from unlabelled samples (``estimate``). Each training image is
then degraded with its own draw around that estimate (``FieldDraws``: the field varies from frame
to frame, and the estimate is not exact). Half of every batch is degraded and half stays clean, in
one forward pass (so BatchNorm learns statistics that serve both). The loss is:

* on the degraded images, distillation from the original model's answer on the *clean* image, plus
  cross-entropy with the label: the student learns to answer as if the picture were clean;
* on the clean images, distillation from the original model's answer, so that clean accuracy holds.

The training loop is the project's one loop (``train.fit``) with this loss as its hook.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F  # noqa: N812  (torch's own convention)

from host.factory.field.degrade import Degradation
from host.factory.field.estimate import JPEG_LEVELS, Estimate, estimate
from host.factory.layout import channels_last, contiguous
from host.factory.predict import to_input
from host.factory.train import Hooks, TrainConfig, fit
from host.factory.train.losses import LossFn
from shared import imaging
from shared.datasets import LabelledImages
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)


class AdaptSettings(BaseModel):
    """How to adapt; every field is recorded in the report."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1, description="passes over the (sub)set of training images")
    images: int | None = Field(25_000, ge=64, description="training images used (class-balanced subset; None: all)")
    batch_size: int = Field(128, ge=8, le=1024, description="images per step")
    lr: float = Field(0.02, gt=0, description="peak learning rate (cosine, short warm-up)")
    weight_decay: float = Field(5e-4, ge=0)
    temperature: float = Field(4.0, gt=0, description="distillation temperature")
    alpha: float = Field(0.7, ge=0, le=1, description="weight of distillation against cross-entropy on degraded images")
    clean_weight: float = Field(1.0, ge=0, description="weight of the distillation term on the clean copy")
    spread: float = Field(1.0, ge=0, le=3, description="how widely each image's degradation varies around the estimate")
    field_fraction: float = Field(0.5, gt=0, le=1, description="share of each batch degraded (the rest stays clean)")
    estimate_images: int = Field(384, ge=16, description="clean training images the estimator degrades and measures")
    seed: int = 0


@dataclass(frozen=True)
class FieldDraws:
    """Per-image degradations drawn around an estimate (multiplicative on gains and noise, additive
    on blur, offset and JPEG quality), ``spread`` scaling every range."""

    centre: Degradation
    spread: float = 1.0

    def draw(self, rng: np.random.Generator) -> Degradation:
        c, s = self.centre, self.spread

        def mul(v: float, rel: float) -> float:
            return float(v * np.exp(rng.uniform(-rel * s, rel * s)))

        quality = c.jpeg_quality
        if quality is not None:
            quality = int(np.clip(quality + rng.integers(-8, 9) * s, JPEG_LEVELS[-1], 98))
        return replace(
            c,
            cast=(mul(c.cast[0], 0.04), c.cast[1], mul(c.cast[2], 0.04)),
            gain=mul(c.gain, 0.15),
            gamma=mul(c.gamma, 0.06),
            offset=c.offset + float(rng.uniform(-6, 6)) * s,
            blur=max(0.0, c.blur + float(rng.uniform(-0.15, 0.15)) * s),
            noise=max(0.0, mul(c.noise, 0.3) if c.noise > 0 else float(rng.uniform(0, 1.5)) * s),
            jpeg_quality=quality,
        )

    def apply(self, images: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
        return np.stack([self.draw(rng).apply(im, rng) for im in images])


def to_uint8(x: torch.Tensor, prep: Preprocessing) -> npt.NDArray[np.uint8]:
    """The exact inverse of ``predict.to_input``: normalised NCHW -> uint8 NHWC."""
    scale, shift = imaging.affine(prep)
    u = (x.detach().permute(0, 2, 3, 1).float() + torch.from_numpy(shift)) / torch.from_numpy(scale)
    out: npt.NDArray[np.uint8] = u.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: T^2 * KL(teacher_T || student_T), as ``train.losses.distill_loss`` has it."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True)
    return kl * t * t


def field_loss(teacher: nn.Module, draws: FieldDraws, prep: Preprocessing, settings: AdaptSettings) -> LossFn:
    """The adaptation loss for ``fit`` (see the module docstring)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(settings.seed)
    t, a, w = settings.temperature, settings.alpha, settings.clean_weight

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = max(1, round(settings.field_fraction * len(x)))  # batches are shuffled: the first k are as random
        degraded = to_input(torch.from_numpy(draws.apply(to_uint8(x[:k], prep), rng)), prep)
        with torch.no_grad():
            target = teacher(x).float()
        logits = model(torch.cat([degraded, x[k:]]))
        s = logits.float()
        loss = a * _kd(s[:k], target[:k], t) + (1 - a) * F.cross_entropy(s[:k], y[:k])
        if k < len(x):
            loss = loss + w * _kd(s[k:], target[k:], t)
        return loss, logits

    return loss_fn


def training_subset(train: LabelledImages, n: int | None, seed: int) -> LabelledImages:
    """A seeded, class-balanced subset of ``n`` training images (all of them when n is None)."""
    if n is None or n >= len(train):
        return train
    rng = np.random.default_rng(seed)
    classes = np.unique(train.labels)
    per = -(-n // len(classes))
    idx = np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:per] for c in classes])
    idx = np.sort(rng.permutation(idx)[:n])
    return LabelledImages(train.images[idx], train.labels[idx], train.classes)


@dataclass
class Adapted:
    model: nn.Module
    estimate: Estimate
    history: list[dict[str, Any]]
    seconds: dict[str, float]


def adapt_model(
    model: nn.Module,
    field: npt.NDArray[np.uint8],
    train: LabelledImages,
    prep: Preprocessing,
    settings: AdaptSettings,
    est: Estimate | None = None,
) -> Adapted:
    """Estimate the field (unless ``est`` is given) and fine-tune a copy of ``model`` towards it."""
    t0 = time.perf_counter()
    est = est or estimate(field, train.images, clean_images=settings.estimate_images)
    t1 = time.perf_counter()
    log.info("field degradation estimated in %.1f s: %s", t1 - t0, est.degradation)
    teacher = channels_last(copy.deepcopy(model).eval())
    student = copy.deepcopy(model)
    cfg = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        label_smoothing=0.0,
        warmup_epochs=min(0.3, settings.epochs / 4),
        seed=settings.seed,
    )
    loss = field_loss(teacher, FieldDraws(est.degradation, settings.spread), prep, settings)
    subset = training_subset(train, settings.images, settings.seed)
    history = fit(student, subset, cfg, prep, hooks=Hooks(loss_fn=loss), desc="adapt")
    student = contiguous(student).eval()
    return Adapted(
        student, est, history, {"estimate_s": round(t1 - t0, 2), "train_s": round(time.perf_counter() - t1, 2)}
    )
