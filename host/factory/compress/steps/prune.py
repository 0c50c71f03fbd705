"""``prune``: structural channel pruning to a MAC-reduction target (see ``compress.prune``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress import prune as channels
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, PruneKnobs, register_step
from host.factory.layout import contiguous


class PruneConfig(PruneKnobs):
    """Channel pruning across residual connections (Torch-Pruning), to a MAC-reduction target."""

    type: Literal["prune"] = Field(description="structural channel pruning")
    target_macs_reduction: float = Field(gt=0, lt=0.95, description="fraction of MACs to remove")


@register_step
class PruneStep(CompressionStep[PruneConfig]):
    config = PruneConfig
    changes_model = True

    def run(self, ctx: Context, config: PruneConfig) -> dict[str, Any]:
        ctx.model = contiguous(ctx.model)
        return channels.prune_channels(
            ctx.model,
            config.criterion,
            config.target_macs_reduction,
            config.round_to,
            config.max_layer_ratio,
            input_size=ctx.prep.size,
        )
