"""``sparse24``: 2:4 semi-structured sparsity, fine-tuned with the mask held."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress import sparsity
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, TrainKnobs, register_step
from shared.errors import EdgeloopError


class Sparse24Config(TrainKnobs):
    """2:4 semi-structured sparsity along input channels, fine-tuned with the mask held."""

    type: Literal["sparse24"] = Field(description="2:4 semi-structured sparsity")


@register_step
class Sparse24Step(CompressionStep[Sparse24Config]):
    config = Sparse24Config
    changes_model = True

    def run(self, ctx: Context, config: Sparse24Config) -> dict[str, Any]:
        info = sparsity.apply_2to4(ctx.model)
        ctx.fit(ctx.model, config.train_config(ctx.seed), desc="finetune (2:4)")
        sparsity.make_permanent(ctx.model)
        check = sparsity.check_2to4(ctx.model)
        if not all(check.values()):
            raise EdgeloopError(f"2:4 pattern broken after fine-tuning in {[k for k, v in check.items() if not v]}")
        ctx.sparsity = "2:4"
        return {
            **info,
            "pattern_holds": check,
            "zeros": sparsity.zero_fraction(ctx.model),
            "note": "only TensorRT on Ampere/Orin GPUs with sparse weights enabled (edgeloop-agent bench "
            "--sparse) turns 2:4 into speed, and only for wide layers; on the CPU it is a dense model",
        }
