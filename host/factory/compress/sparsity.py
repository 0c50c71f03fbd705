"""Weight sparsity that keeps the dense shape: unstructured magnitude pruning and 2:4.

Masks are held with ``torch.nn.utils.prune`` (forward pre-hooks) during fine-tuning and then made
permanent with ``prune.remove``. 2:4 means: along the input-channel axis, every group of 4
consecutive weights at the same (output channel, kernel position) keeps at most 2 non-zeros, the
layout Ampere/Orin sparse Tensor Cores (TensorRT ``SPARSE_WEIGHTS``) accelerate.
"""

from __future__ import annotations

import gzip
import io
import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

log = logging.getLogger(__name__)


def _prunable(model: nn.Module, min_in: int = 1) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[1] >= min_in
    ]


def unstructured(model: nn.Module, amount: float) -> dict[str, Any]:
    """Global L1 magnitude pruning of conv/linear weights (masks stay until ``make_permanent``)."""
    params = [(m, "weight") for _, m in _prunable(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return {"amount": amount, "zeros": zero_fraction(model)}


def mask_2to4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| in every group of 4 consecutive input channels."""
    w = weight.detach()
    if w.shape[1] % 4:
        raise ValueError(f"input channels ({w.shape[1]}) must be a multiple of 4 for 2:4 sparsity")
    moved = w.movedim(1, -1)  # (out, kh, kw, in) or (out, in)
    groups = moved.reshape(*moved.shape[:-1], w.shape[1] // 4, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(moved.shape).movedim(-1, 1).to(weight.dtype)


def apply_2to4(model: nn.Module) -> dict[str, Any]:
    """Attach 2:4 masks to every conv/linear whose input channels divide by 4 (the stem's 3 don't)."""
    layers = []
    for name, m in _prunable(model, min_in=4):
        if m.weight.shape[1] % 4 == 0:
            prune.custom_from_mask(m, "weight", mask_2to4(m.weight))
            layers.append(name)
    log.info("2:4 masks on %d layers", len(layers))
    return {"layers": layers}


def is_2to4(weight: torch.Tensor) -> bool:
    """True when every 4 consecutive input-channel weights hold at most 2 non-zeros."""
    w = weight.detach()
    if w.shape[1] % 4:
        return False
    groups = w.movedim(1, -1).reshape(-1, 4)
    return bool(((groups != 0).sum(-1) <= 2).all())


def check_2to4(model: nn.Module) -> dict[str, bool]:
    """Per eligible layer (input channels divisible by 4): does it follow the 2:4 pattern?"""
    return {n: is_2to4(m.weight) for n, m in _prunable(model, min_in=4) if m.weight.shape[1] % 4 == 0}


def make_permanent(model: nn.Module) -> None:
    for _, m in _prunable(model):
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")


def zero_fraction(model: nn.Module) -> float:
    ws = [m.weight.detach() for _, m in _prunable(model)]
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / max(1, total))


def gzip_size(data: bytes) -> int:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(data)
    return len(buf.getvalue())
