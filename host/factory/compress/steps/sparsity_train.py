"""``sparsity_train``: Network Slimming sparsity training, an L1 penalty on BatchNorm scales."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress import prune
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, TrainKnobs, register_step
from host.factory.train import Hooks


class SparsityTrainConfig(TrainKnobs):
    """Network Slimming sparsity training: L1 penalty lambda * sum|gamma| on BN scales."""

    type: Literal["sparsity_train"] = Field(description="Network Slimming sparsity training")
    reg: float = Field(1e-4, gt=0, le=1e-1, description="lambda of the L1 penalty on BN scale factors")


@register_step
class SparsityTrainStep(CompressionStep[SparsityTrainConfig]):
    config = SparsityTrainConfig
    changes_model = True

    def run(self, ctx: Context, config: SparsityTrainConfig) -> dict[str, Any]:
        hook = prune.slimming_regularizer(ctx.model, config.reg, ctx.prep.size)
        ctx.fit(ctx.model, config.train_config(ctx.seed), Hooks(after_backward=hook), desc="sparsity")
        return {"reg": config.reg, **prune.bn_scale_summary(ctx.model)}
