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

Each ``type`` is a step of ``steps/`` (one module each); its config model there lists the keys the
table takes. The order rules read the step classes' facts: nothing changes the model after the
FP32 export, conversions of that file come after it, and a step that writes the ONNX itself
(QAT) stands alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator
from pydantic_core import PydanticCustomError

# importing the steps package imports every step module, so the registry is full from here on
from host.factory.compress.steps.base import CompressionStep, StepConfig, step_class, step_types
from shared.compat import tomllib
from shared.errors import EdgeloopError
from shared.protocol import Id


def _step_config(item: Any) -> Any:
    """Validate one ``[[steps]]`` table with the config model of the step its ``type`` names."""
    kind = item.type if isinstance(item, StepConfig) else item.get("type") if isinstance(item, dict) else None
    known = ", ".join(step_types())
    if kind is None:
        raise PydanticCustomError(
            "step_type_missing", "a step is a table with a 'type' key, one of: {known}", {"known": known}
        )
    if kind not in step_types():
        raise PydanticCustomError(
            "unknown_step_type",
            "unknown step type {type}; known step types: {known}",
            {"type": repr(kind), "known": known},
        )
    config = step_class(kind).config
    return item if isinstance(item, config) else config.model_validate(item)


Step = Annotated[SerializeAsAny[StepConfig], BeforeValidator(_step_config)]


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Id = Field(description="output base name, e.g. resnet20-slim")
    description: str = Field("", description="what the recipe makes, for people")
    seed: int = Field(0, description="seed of every training step")
    steps: list[Step] = Field(min_length=1, description="what to do, in order")

    def step_classes(self) -> list[type[CompressionStep[Any]]]:
        return [step_class(s.type) for s in self.steps]

    @model_validator(mode="after")
    def _order(self) -> Recipe:
        """Order rules, read from the step classes' facts (no step type is named here)."""
        classes = self.step_classes()
        onnx_steps = list(dict.fromkeys(s.type for s, c in zip(self.steps, classes, strict=True) if c.onnx_only()))
        exporters = " or ".join(f"'{c.type_name()}'" for c in map(step_class, step_types()) if c.exports_fp32_onnx)
        for s, c in zip(self.steps, classes, strict=True):
            if c.writes_own_onnx and onnx_steps:
                raise ValueError(
                    f"a '{s.type}' recipe writes <name>.onnx itself; put {'/'.join(onnx_steps)} in another recipe"
                )
        exported = False
        for i, (s, c) in enumerate(zip(self.steps, classes, strict=True), 1):
            if c.exports_fp32_onnx:
                exported = True
            elif c.needs_fp32_onnx and not exported:
                raise ValueError(f"step {i} ({s.type}) needs an earlier {exporters} step")
            elif exported and c.changes_model:
                raise ValueError(f"step {i} ({s.type}) changes the model after {exporters}; export last")
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
