"""``finetune``: train on after pruning, optionally distilling from a teacher (and comparing)."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, TrainKnobs, register_step
from host.factory.train import Hooks, distill_loss


class DistillSpec(BaseModel):
    """Knowledge distillation settings of a fine-tune."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field("source", description="'source' (the input checkpoint) or a .pt path")
    temperature: float = Field(4.0, gt=0, description="softens both logits before they are compared")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")


class FinetuneConfig(TrainKnobs):
    """Fine-tuning of the current model, with or without knowledge distillation."""

    type: Literal["finetune"] = Field(description="fine-tuning")
    distill: DistillSpec | None = Field(None, description="distil from a teacher (None: plain cross-entropy)")
    compare_without_distill: bool = Field(
        False, description="also train the same student without distillation, for the report"
    )

    @model_validator(mode="after")
    def _compare_needs_distill(self) -> FinetuneConfig:
        if self.compare_without_distill and self.distill is None:
            raise ValueError("compare_without_distill needs a distill section")
        return self


@register_step
class FinetuneStep(CompressionStep[FinetuneConfig]):
    config = FinetuneConfig
    changes_model = True

    def run(self, ctx: Context, config: FinetuneConfig) -> dict[str, Any]:
        cfg = config.train_config(ctx.seed)
        record: dict[str, Any] = {"distill": config.distill.model_dump() if config.distill else None}
        if config.compare_without_distill:
            plain = copy.deepcopy(ctx.model)
            ctx.fit(plain, cfg, desc="finetune (no KD)")
            record["top1_without_distill"] = ctx.evaluate(plain)
        hooks = None
        if config.distill is not None:
            kd = config.distill
            hooks = Hooks(loss_fn=distill_loss(ctx.teacher(kd.teacher), kd.temperature, kd.alpha, 0.0))
        ctx.fit(ctx.model, cfg, hooks, desc="finetune" + (" (KD)" if hooks else ""))
        if config.compare_without_distill:
            record["top1_with_distill"] = ctx.evaluate()
        return record
