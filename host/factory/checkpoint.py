"""Checkpoints: weights plus the metadata needed to rebuild and use the model. Never a pickled module.

Saved with ``torch.save`` of plain containers and loaded with ``weights_only=True``, so opening a
checkpoint cannot run code. A channel-pruned model is rebuilt from its registered architecture and
then every Conv/BN/Linear is resized to the shapes stored in the state dict. What the shapes cannot
say (how many residual blocks each stage kept) is in ``arch_options``, the keyword arguments of the
architecture's factory; a checkpoint written before they existed has none and builds the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import nn

from host.factory import models
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)

FORMAT = "edgeloop.checkpoint/1"


@runtime_checkable
class HasArchOptions(Protocol):
    """A model whose factory needs more than its weights' shapes to rebuild it (e.g. blocks per stage)."""

    def arch_options(self) -> dict[str, Any]: ...


@dataclass
class Checkpoint:
    arch: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    arch_options: dict[str, Any] = field(default_factory=dict)  # the factory's keyword arguments

    def build(self) -> nn.Module:
        """Rebuild the model (eval mode) from the architecture name, its options and the stored weights."""
        try:
            model = models.build(self.arch, num_classes=len(self.classes), **self.arch_options)
        except (TypeError, ValueError) as e:
            raise EdgeloopError(
                f"checkpoint options {self.arch_options} do not fit architecture {self.arch!r}: {e}"
            ) from e
        resize_to_state_dict(model, self.state_dict)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        if missing or unexpected:
            raise EdgeloopError(
                f"checkpoint weights do not fit architecture {self.arch!r}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arch": self.arch,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "state_dict": self.state_dict,
            "metrics": self.metrics,
            "extra": self.extra,
            "arch_options": self.arch_options,
        }


def from_model(
    model: nn.Module,
    arch: str,
    classes: tuple[str, ...],
    preprocessing: Preprocessing,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Checkpoint:
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    options = model.arch_options() if isinstance(model, HasArchOptions) else {}
    return Checkpoint(arch, classes, preprocessing, state, dict(metrics or {}), dict(extra or {}), options)


def save(ckpt: Checkpoint, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt.to_dict(), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint behind
    return path


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise EdgeloopError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise EdgeloopError(f"{path} is not a readable edgeloop checkpoint: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EdgeloopError(f"{path} is not an edgeloop checkpoint (expected format {FORMAT})")
    return Checkpoint(
        arch=str(data["arch"]),
        classes=tuple(data["classes"]),
        preprocessing=Preprocessing.from_dict(data["preprocessing"]),
        state_dict=data["state_dict"],
        metrics=dict(data.get("metrics", {})),
        extra=dict(data.get("extra", {})),
        arch_options=dict(data.get("arch_options", {})),
    )


def resize_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Swap each Conv2d/BatchNorm2d/Linear for one shaped like its weights in ``state``.

    Channel pruning only changes channel counts, so this rebuilds a pruned network from the
    base architecture without storing code or pickled modules.
    """
    for name, module in list(model.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            continue
        w = state[key]
        new: nn.Module | None = None
        if isinstance(module, nn.Conv2d) and tuple(w.shape) != tuple(module.weight.shape):
            groups = module.groups if module.groups == 1 else w.shape[0]
            new = nn.Conv2d(
                w.shape[1] * groups,
                w.shape[0],
                cast(tuple[int, int], module.kernel_size),
                cast(tuple[int, int], module.stride),
                cast(tuple[int, int], module.padding),
                cast(tuple[int, int], module.dilation),
                groups,
                module.bias is not None,
            )
        elif isinstance(module, nn.BatchNorm2d) and w.shape[0] != module.num_features:
            new = nn.BatchNorm2d(w.shape[0], module.eps, module.momentum)
        elif isinstance(module, nn.Linear) and tuple(w.shape) != tuple(module.weight.shape):
            new = nn.Linear(w.shape[1], w.shape[0], module.bias is not None)
        if new is not None:
            _set_submodule(model, name, new)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
