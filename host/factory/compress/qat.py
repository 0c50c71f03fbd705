"""Quantization-aware training with torch's own fake-quantize ops.

Why not nvidia-modelopt: its wheel installs here, but its QAT path is built and tested for CUDA
and pulls in a large dependency set; torch's fake-quantize ops run on this CPU, are differentiable
(LSQ-style learnable activation scales via ``_fake_quantize_learnable_per_tensor_affine``) and
export straight to ONNX QuantizeLinear/DequantizeLinear pairs, which is all TensorRT needs.

Scheme (TensorRT's): every Conv/Linear input is fake-quantized per tensor, symmetric int8; every
weight per output channel, symmetric int8 (scale = max|w| / 127). Runs on a BN-folded model.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from host.factory.predict import to_input
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)

QMIN, QMAX = -128, 127


class _QuantIO(nn.Module):
    """Symmetric int8 fake quantization of the input (learnable scale) and the weights (per channel)."""

    zero_point: torch.Tensor

    def __init__(self, inner: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.inner = inner
        # shape [1], not 0-dim: the learnable fake-quantize kernel indexes scale[0]
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1))
        self.mode = "train"  # "float" (calibration: no fake quant), "train" (learnable scale), "export"
        self.export_scale = 1.0

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return x
        if self.mode == "export":  # a Python float: torch.export needs a constant scale
            return torch.fake_quantize_per_tensor_affine(x, self.export_scale, 0, QMIN, QMAX)
        scale = self.scale.abs() + 1e-8
        return torch._fake_quantize_learnable_per_tensor_affine(x.float(), scale, self.zero_point, QMIN, QMAX, 1.0)

    def quant_weight(self) -> torch.Tensor:
        w = self.inner.weight
        amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-8)
        zeros = torch.zeros(w.shape[0], dtype=torch.int32)
        # the grid is symmetric (scale = amax/127); ONNX only allows the (-128, 127) range
        return torch.fake_quantize_per_channel_affine(w, amax / QMAX, zeros, 0, QMIN, QMAX)


class QuantConv2d(_QuantIO):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = cast(nn.Conv2d, self.inner)
        return F.conv2d(self.quant_input(x), self.quant_weight(), c.bias, c.stride, c.padding, c.dilation, c.groups)


class QuantLinear(_QuantIO):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quant_input(x), self.quant_weight(), self.inner.bias)


def _replace(model: nn.Module) -> list[_QuantIO]:
    wrapped: list[_QuantIO] = []
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d):
            q: _QuantIO = QuantConv2d(child)
        elif isinstance(child, nn.Linear):
            q = QuantLinear(child)
        else:
            wrapped.extend(_replace(child))
            continue
        setattr(model, name, q)
        wrapped.append(q)
    return wrapped


@torch.no_grad()
def prepare_qat(
    model: nn.Module, calib_images: npt.NDArray[np.uint8], prep: Preprocessing, percentile: float = 99.99
) -> tuple[nn.Module, dict[str, Any]]:
    """Copy ``model`` (BN-folded, eval) with fake-quant wrappers; scales start at a calibrated percentile."""
    qmodel = copy.deepcopy(model).eval()
    wrapped = _replace(qmodel)
    seen: dict[int, list[torch.Tensor]] = {id(w): [] for w in wrapped}
    hooks = [
        w.register_forward_pre_hook(lambda mod, args: seen[id(mod)].append(args[0].detach().abs().flatten()))
        for w in wrapped
    ]
    for w in wrapped:
        w.mode = "float"  # calibration sees the float activations
    x = to_input(torch.from_numpy(calib_images), prep).contiguous()
    qmodel(x)
    for h in hooks:
        h.remove()
    ranges = {}
    for name, w in [(n, m) for n, m in qmodel.named_modules() if isinstance(m, _QuantIO)]:
        values = torch.cat(seen[id(w)])
        amax = float(torch.quantile(values[torch.randperm(len(values))[:1_000_000]], percentile / 100))
        w.scale.fill_(max(amax, 1e-6) / QMAX)
        w.mode = "train"
        ranges[name] = round(amax, 5)
    log.info("QAT: %d layers fake-quantized; initial input ranges %s", len(wrapped), ranges)
    return qmodel, {"layers": len(wrapped), "initial_amax": ranges}


def set_exporting(qmodel: nn.Module, on: bool = True) -> None:
    """Switch to constant scales for export. Exporting also freezes the parameters: with gradients
    on, fake-quantize dispatches to a ``_cachemask`` op that torch.export cannot trace."""
    for p in qmodel.parameters():
        p.requires_grad_(not on)
    for m in qmodel.modules():
        if isinstance(m, _QuantIO):
            m.mode = "export" if on else "train"
            m.export_scale = float(m.scale.detach().abs()) + 1e-8


def learned_ranges(qmodel: nn.Module) -> dict[str, float]:
    return {
        n: round(float(m.scale.detach().abs()) * QMAX, 5) for n, m in qmodel.named_modules() if isinstance(m, _QuantIO)
    }


def to_u8_activations(model: Any) -> int:
    """Rewrite symmetric int8 activation Q/DQ (zero point 0) as uint8 with zero point 128.

    Exact: int8 q in [-128, 127] and uint8 q + 128 in [0, 255] dequantize to the same values, so
    the ONNX Runtime flavour of a QAT model is the TensorRT flavour's twin, not a re-quantization.
    Returns how many zero-point tensors changed.
    """
    import onnx
    from onnx import numpy_helper

    # Scales and zero points are initializers (dynamo exporter) or Constant nodes (TorchScript exporter).
    tensors: dict[str, Any] = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    tensors[n.output[0]] = a.t
    changed: set[str] = set()
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3 or n.input[2] in changed:
            continue
        scale, zp = tensors.get(n.input[1]), tensors.get(n.input[2])
        if scale is None or zp is None or numpy_helper.to_array(scale).size != 1:
            continue  # weights (per-channel) keep int8
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8 or arr.any():
            continue
        zp.CopyFrom(numpy_helper.from_array(np.full(arr.shape, 128, dtype=np.uint8), zp.name))
        changed.add(n.input[2])
    onnx.checker.check_model(model)
    return len(changed)
