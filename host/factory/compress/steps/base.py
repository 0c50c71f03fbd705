"""The extension point of ``edgeloop compress``: one ``CompressionStep`` class per recipe step type.

A step is a module in this package holding its config model and its class::

    class PruneConfig(StepConfig):
        type: Literal["prune"] = Field(description="...")     # the TOML ``type`` key
        criterion: ... = Field(..., description="...")

    @register_step
    class PruneStep(CompressionStep[PruneConfig]):
        config = PruneConfig
        changes_model = True
        def run(self, ctx, config): ...

The recipe validates every ``[[steps]]`` table with the config model its ``type`` names here, and
checks the order of steps with the class facts (``changes_model``, ``exports_fp32_onnx``,
``needs_fp32_onnx``, ``writes_own_onnx``); the pipeline runs the class it looks up here. Nothing
else lists the step types.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from host.factory.compress.context import Context
from host.factory.train import TrainConfig
from shared.errors import EdgeloopError


class StepConfig(BaseModel):
    """One ``[[steps]]`` table of a recipe. Subclasses narrow ``type`` to ``Literal["<their type>"]``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="which step this is")


class TrainKnobs(StepConfig):
    """The training settings of every step that trains (sparsity training, fine-tuning, QAT, ...)."""

    epochs: int = Field(10, ge=1, description="passes over the training set")
    lr: float = Field(0.02, gt=0, description="peak learning rate (cosine decay)")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    batch_size: int = Field(128, ge=8, le=4096, description="images per optimiser step")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up before the cosine decay")

    def train_config(self, seed: int, bf16: bool | None = None) -> TrainConfig:
        extra = {} if bf16 is None else {"bf16": bf16}  # None: TrainConfig's per-CPU default
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            warmup_epochs=self.warmup_epochs,
            seed=seed,
            label_smoothing=0.1,
            **extra,
        )


class PruneKnobs(StepConfig):
    """The settings of every step that removes channels: which go, and the shapes left."""

    criterion: Literal["bn_scale", "l1"] = Field(description="bn_scale = Network Slimming; l1 = L1-norm filters")
    round_to: int = Field(8, ge=1, le=64, description="channel counts become multiples of this")
    max_layer_ratio: float = Field(0.75, gt=0, lt=1, description="most any one layer may lose")


C = TypeVar("C", bound=StepConfig)


class CompressionStep(ABC, Generic[C]):
    """One step type: its config model, what the recipe validator must know of it, and ``run``."""

    config: ClassVar[type[StepConfig]]
    # the facts the recipe's order rules read
    changes_model: ClassVar[bool] = False  # alters the torch model: must come before any export
    exports_fp32_onnx: ClassVar[bool] = False  # writes the verified FP32 <name>.onnx later steps convert
    needs_fp32_onnx: ClassVar[bool] = False  # converts that file: needs an earlier exporting step
    writes_own_onnx: ClassVar[bool] = False  # writes <name>.onnx itself: no exporting/converting step beside it

    @classmethod
    def type_name(cls) -> str:
        return config_type(cls.config)

    @classmethod
    def onnx_only(cls) -> bool:
        """Works on ONNX files and leaves the torch model alone (so nothing to re-evaluate after it)."""
        return cls.exports_fp32_onnx or cls.needs_fp32_onnx

    def preflight(self, config: C) -> None:  # optional hook: most steps need nothing
        """Fail before the recipe's first step runs if this step cannot run here (a missing runtime...)."""

    @abstractmethod
    def run(self, ctx: Context, config: C) -> dict[str, Any]:
        """Do the step on ``ctx``; returns what the step's record adds (what changed, files written)."""


_REGISTRY: dict[str, type[CompressionStep[Any]]] = {}

S = TypeVar("S", bound=type[CompressionStep[Any]])


def config_type(config: type[StepConfig]) -> str:
    """The one value of a config model's ``type: Literal[...]`` field."""
    values = typing.get_args(config.model_fields["type"].annotation)
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"{config.__name__}.type must be Literal['<step type>'], not {values}")
    return values[0]


def register_step(cls: S) -> S:
    """Class decorator: make ``cls`` the step for its config's ``type``; a second one is a bug."""
    name = cls.type_name()
    if name in _REGISTRY:
        raise ValueError(f"compression step {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
    _REGISTRY[name] = cls
    return cls


def step_types() -> list[str]:
    return sorted(_REGISTRY)


def step_class(name: str) -> type[CompressionStep[Any]]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EdgeloopError(f"unknown step type {name!r}; known step types: {', '.join(step_types())}") from None
