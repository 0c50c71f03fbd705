"""``unstructured``: global magnitude pruning of single weights, fine-tuned with the mask held."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from host.factory.compress import sparsity
from host.factory.compress.context import Context
from host.factory.compress.steps.base import CompressionStep, TrainKnobs, register_step


class UnstructuredConfig(TrainKnobs):
    """Global magnitude pruning of individual weights, fine-tuned with the mask held."""

    type: Literal["unstructured"] = Field(description="unstructured magnitude pruning")
    amount: float = Field(gt=0, lt=1, description="fraction of conv/linear weights set to zero")


@register_step
class UnstructuredStep(CompressionStep[UnstructuredConfig]):
    config = UnstructuredConfig
    changes_model = True

    def run(self, ctx: Context, config: UnstructuredConfig) -> dict[str, Any]:
        info = sparsity.unstructured(ctx.model, config.amount)
        ctx.fit(ctx.model, config.train_config(ctx.seed), desc="finetune (masked)")
        sparsity.make_permanent(ctx.model)
        return {
            **info,
            "zeros_after_finetune": sparsity.zero_fraction(ctx.model),
            "note": "dense runtimes (ONNX Runtime CPU, TensorRT dense kernels) run zeros at full cost: "
            "expect no speed-up, only a smaller compressed (gzip) file",
        }
