"""Structural channel pruning with Torch-Pruning (dependency-aware across residual connections).

* Network Slimming (Liu et al. 2017): L1 on BatchNorm scale factors during sparsity training
  (Torch-Pruning's ``BNScalePruner.regularize``), then channels pruned on a global BN-scale ranking.
* L1-norm filter pruning (Li et al. 2017): Torch-Pruning's magnitude importance with p=1.

Channel counts are rounded to a multiple of ``round_to`` (8 for Tensor Cores). The amount is set by
a MAC-reduction target: the global pruning ratio grows step by step until the model is small enough.
No channel surgery is written here; Torch-Pruning rewrites every coupled layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from host.factory.layout import contiguous
from host.factory.stats import count_macs, count_params
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

Criterion = Literal["bn_scale", "l1"]


def example_input(input_size: int = 32) -> torch.Tensor:
    return torch.zeros(1, 3, input_size, input_size)


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The final Linear layers keep their outputs: the class count never changes."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def channel_importance(criterion: Criterion) -> tp.importance.Importance:
    """Torch-Pruning's ranking of a group's channels: BN scale factors, or the L1 norm of the filters."""
    return tp.importance.BNScaleImportance() if criterion == "bn_scale" else tp.importance.MagnitudeImportance(p=1)


def slimming_regularizer(model: nn.Module, reg: float, input_size: int = 32) -> Callable[[nn.Module], None]:
    """An after-backward hook adding ``reg * sign(gamma)`` to every BN scale's gradient (L1 subgradient)."""
    if reg <= 0:
        raise EdgeloopError("sparsity regularisation strength (lambda) must be > 0")
    pruner = tp.pruner.BNScalePruner(
        model,
        example_input(input_size),
        importance=tp.importance.BNScaleImportance(),
        reg=reg,
        ignored_layers=classifier_layers(model),
    )

    def hook(m: nn.Module) -> None:
        pruner.regularize(m)

    return hook


def bn_scale_summary(model: nn.Module, threshold: float = 1e-2) -> dict[str, float]:
    """How sparse the BN scales are: fraction below ``threshold`` and the mean |gamma|."""
    gammas = torch.cat([m.weight.detach().abs().flatten() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    return {
        "bn_gamma_below_1e-2": float((gammas < threshold).float().mean()),
        "bn_gamma_mean_abs": float(gammas.mean()),
    }


def _widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune_channels(
    model: nn.Module,
    criterion: Criterion,
    target_macs_reduction: float,
    round_to: int = 8,
    max_layer_ratio: float = 0.75,
    steps: int = 40,
    input_size: int = 32,
) -> dict[str, Any]:
    """Prune ``model`` in place until its MACs drop by ``target_macs_reduction`` (0..1).

    Returns a record: MACs/params before and after, and output channels per layer before -> after.
    """
    if not 0 < target_macs_reduction < 1:
        raise EdgeloopError("target_macs_reduction must be between 0 and 1")
    model.eval()
    model = contiguous(model)
    before_widths = _widths(model)
    macs0, params0 = count_macs(model, input_size), count_params(model)
    target = (1 - target_macs_reduction) * macs0
    pruner = _pruner(model, criterion, round_to, max_layer_ratio, steps, input_size)
    macs, done = _step_until(pruner, model, target, macs0, steps, input_size)
    channels = {n: [before_widths[n], w] for n, w in _widths(model).items()}
    reduction = 1 - macs / macs0
    changed = {n: f"{a}->{b}" for n, (a, b) in channels.items() if a != b}
    log.info("pruned (%s): MACs %d -> %d (-%.1f%%); channels %s", criterion, macs0, macs, 100 * reduction, changed)
    if macs > target:
        log.warning(
            "pruning stopped at -%.1f%% MACs (target -%.1f%%): per-layer cap %.0f%% reached",
            100 * reduction,
            100 * target_macs_reduction,
            100 * max_layer_ratio,
        )
    return {
        "criterion": criterion,
        "round_to": round_to,
        "pruner_steps": done,
        "macs_before": macs0,
        "macs_after": macs,
        "macs_reduction": reduction,
        "params_before": params0,
        "params_after": count_params(model),
        "channels": channels,
    }


def _pruner(
    model: nn.Module, criterion: Criterion, round_to: int, max_layer_ratio: float, steps: int, input_size: int
) -> tp.pruner.MetaPruner:
    """Torch-Pruning's global pruner, ranking channels by ``criterion`` across all layers."""
    return tp.pruner.MetaPruner(
        model,
        example_input(input_size),
        importance=channel_importance(criterion),
        global_pruning=True,
        pruning_ratio=0.95,
        max_pruning_ratio=max_layer_ratio,
        iterative_steps=steps,
        round_to=round_to,
        ignored_layers=classifier_layers(model),
    )


def _step_until(
    pruner: tp.pruner.MetaPruner, model: nn.Module, target: float, macs: int, steps: int, input_size: int
) -> tuple[int, int]:
    """Take pruner steps until the model's MACs reach ``target``; returns (MACs, steps taken)."""
    done = 0
    for _ in range(steps):
        if macs <= target:
            break
        pruner.step()
        done += 1
        macs = count_macs(model, input_size)
    return macs, done
