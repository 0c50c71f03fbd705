"""Compression recipes: a pydantic-validated TOML list of steps; one file reproduces one model.

Example::

    name = "resnet20-slim"
    [[steps]]
    type = "sparsity_train"   # Network Slimming: L1 on BN scales
    epochs = 30
    reg = 1e-4
    [[steps]]
    type = "prune"
    criterion = "bn_scale"
    target_macs_reduction = 0.5
    [[steps]]
    type = "finetune"
    epochs = 60
    distill = { temperature = 4.0, alpha = 0.9 }
    [[steps]]
    type = "export"
    [[steps]]
    type = "ptq"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import EdgeloopError
from shared.protocol import Id


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainKnobs(_Step):
    epochs: int = Field(10, ge=1, description="passes over the training set")
    lr: float = Field(0.02, gt=0, description="peak learning rate (cosine decay)")
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(128, ge=8, le=4096)
    warmup_epochs: float = Field(1.0, ge=0)


class DistillSpec(_Step):
    teacher: str = Field("source", description="'source' (the input checkpoint) or a .pt path")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")


class SparsityTrain(TrainKnobs):
    """Network Slimming sparsity training: L1 penalty lambda * sum|gamma| on BN scales."""

    type: Literal["sparsity_train"]
    reg: float = Field(1e-4, gt=0, le=1e-1, description="lambda of the L1 penalty on BN scale factors")


class Prune(_Step):
    """Channel pruning across residual connections (Torch-Pruning), to a MAC-reduction target."""

    type: Literal["prune"]
    criterion: Literal["bn_scale", "l1"] = Field(description="bn_scale = Network Slimming; l1 = L1-norm filters")
    target_macs_reduction: float = Field(gt=0, lt=0.95, description="fraction of MACs to remove")
    round_to: int = Field(8, ge=1, le=64, description="channel counts become multiples of this")
    max_layer_ratio: float = Field(0.75, gt=0, lt=1, description="most any one layer may lose")


class Finetune(TrainKnobs):
    type: Literal["finetune"]
    distill: DistillSpec | None = None
    compare_without_distill: bool = Field(
        False, description="also train the same student without distillation, for the report"
    )

    @model_validator(mode="after")
    def _compare_needs_distill(self) -> Finetune:
        if self.compare_without_distill and self.distill is None:
            raise ValueError("compare_without_distill needs a distill section")
        return self


class Unstructured(TrainKnobs):
    """Global magnitude pruning of individual weights, fine-tuned with the mask held."""

    type: Literal["unstructured"]
    amount: float = Field(gt=0, lt=1, description="fraction of conv/linear weights set to zero")


class Sparse24(TrainKnobs):
    """2:4 semi-structured sparsity along input channels, fine-tuned with the mask held."""

    type: Literal["sparse24"]


class Export(_Step):
    """Fold BN and export the verified FP32 ONNX: <name>.onnx."""

    type: Literal["export"]
    atol: float = Field(1e-4, gt=0, description="max abs logit difference vs the unfolded model")


Flavour = Literal["onnxruntime", "tensorrt"]


def _both_flavours() -> list[Flavour]:
    return ["onnxruntime", "tensorrt"]


class PTQ(_Step):
    """INT8 post-training quantization of the exported ONNX: <name>-int8.onnx (ORT) / -int8-trt.onnx."""

    type: Literal["ptq"]
    method: Literal["minmax", "entropy", "percentile"] = "percentile"
    percentile: float = Field(99.999, gt=90, le=100)
    calibration_images: int = Field(1024, ge=1, le=50000)
    flavours: list[Flavour] = Field(default_factory=_both_flavours, min_length=1)
    keep_edges_float: bool = Field(False, description="keep the first conv and the classifier in float")


class QAT(TrainKnobs):
    """Quantization-aware fine-tuning: <name>-trt.onnx (TensorRT Q/DQ) and <name>.onnx (ORT U8S8 twin)."""

    type: Literal["qat"]
    lr: float = Field(0.002, gt=0)
    calibration_images: int = Field(1024, ge=1, le=50000)


class FP16(_Step):
    """FP16 ONNX with FP32 inputs/outputs: <name>-fp16.onnx."""

    type: Literal["fp16"]


Step = Annotated[
    SparsityTrain | Prune | Finetune | Unstructured | Sparse24 | Export | PTQ | QAT | FP16,
    Field(discriminator="type"),
]


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Id = Field(description="output base name, e.g. resnet20-slim")
    description: str = ""
    seed: int = 0
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> Recipe:
        exported = False
        kinds = {s.type for s in self.steps}
        if "qat" in kinds and kinds & {"export", "ptq", "fp16"}:
            raise ValueError("a 'qat' recipe writes <name>.onnx itself; put export/ptq/fp16 in another recipe")
        for i, step in enumerate(self.steps):
            if step.type == "export":
                exported = True
            elif step.type in ("ptq", "fp16") and not exported:
                raise ValueError(f"step {i + 1} ({step.type}) needs an earlier 'export' step")
            elif exported and step.type in ("sparsity_train", "prune", "finetune", "unstructured", "sparse24"):
                raise ValueError(f"step {i + 1} ({step.type}) changes the model after 'export'; export last")
        return self


def load_recipe(path: str | Path) -> tuple[Recipe, str]:
    """Parse and validate a recipe file; errors name the step and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise EdgeloopError(f"cannot read recipe {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EdgeloopError(f"recipe {path} is not valid TOML: {e}") from e
    try:
        return Recipe.model_validate(data), text
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise EdgeloopError(f"invalid recipe {path}: {problems}") from e


def builtin_recipes() -> dict[str, Path]:
    d = Path(__file__).parent / "recipes"
    return {p.stem: p for p in sorted(d.glob("*.toml"))}
