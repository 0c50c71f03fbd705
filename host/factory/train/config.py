"""How to train: the one validated set of knobs, recorded in every model card."""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device.engine import sysinfo


@functools.cache
def fast_bf16() -> bool:
    """Whether bfloat16 autocast speeds up training on this CPU.

    Measured on the project's machines: with AMX it was the faster setting; on a Xeon with
    AVX512-BF16 but no AMX, ResNet-20 took ~121 s per epoch in bf16 against ~100 s in FP32.
    """
    isa = sysinfo.machine()["isa"]
    return isinstance(isa, list) and "amx_bf16" in isa


class TrainConfig(BaseModel):
    """How to train; every field is recorded in the model card."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(120, ge=1, description="passes over the training set")
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(0.1, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    cutout: int = Field(0, ge=0, le=32, description="side of a random square blanked per image (0: off)")
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(2.0, ge=0, description="linear warm-up (cosine schedule)")
    seed: int = 0
    bf16: bool = Field(
        default_factory=fast_bf16,
        description="bfloat16 autocast; default on only where the CPU has AMX (elsewhere it is slower than FP32)",
    )
    channels_last: bool = True
    swa_start: int | None = Field(
        None, ge=0, description="Stochastic Weight Averaging from this epoch on (None: off); the result is the average"
    )
    swa_lr: float = Field(0.01, gt=0, description="learning rate held constant while weights are averaged")

    @model_validator(mode="after")
    def _swa_inside_run(self) -> TrainConfig:
        if self.swa_start is not None and self.swa_start >= self.epochs:
            raise ValueError(f"swa_start ({self.swa_start}) must be below epochs ({self.epochs})")
        if self.swa_start is not None and self.schedule != "cosine":
            raise ValueError("SWA anneals with the cosine schedule; use schedule 'cosine' with swa_start")
        return self
