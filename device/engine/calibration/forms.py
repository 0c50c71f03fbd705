"""Which explicit Q/DQ form a runtime runs correctly and fastest, and why.

* TensorRT (a GPU): symmetric int8 activations and per-channel symmetric int8 weights, float biases,
  the explicit-quantization form TensorRT 10 builds and TensorRT 11 requires.
* x86 CPUs: uint8 activations and per-channel int8 weights (U8S8), which ONNX Runtime's and
  OpenVINO's x86 kernels run fastest. How many bits the weights may use depends on the ISA:

  - with VNNI (AVX-512 VNNI, AVX-VNNI) or AMX, ``vpdpbusd`` / AMX tiles add u8 x s8 products straight
    into 32-bit sums: full 8-bit weights are exact;
  - with AVX2 only, ``vpmaddubsw`` adds *pairs* of u8 x s8 products into a saturating int16, and two
    products of 255 x 127 overflow it. ONNX Runtime's quantization docs warn of exactly this. 7-bit
    weights (``reduce_range``) keep every pair inside int16. Measured on an AMD EPYC without VNNI:
    the zoo's slimmed INT8 file lost 3.12 points with 8-bit weights and none with 7-bit ones.
* ARM CPUs (a Jetson's Cortex-A78AE, where no GPU runs it): NEON/``sdot`` accumulate in 32 bits, so
  8-bit weights are exact; ONNX Runtime's ARM kernels take U8S8 too.

A release is made once for many CPUs, so its portable CPU form is the AVX2-safe one (7-bit weights);
``edgeloop-agent calibrate`` on a device writes the form of that device.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Literal

from device.engine import sysinfo

Activations = Literal["u8", "s8"]


@dataclass(frozen=True)
class QdqForm:
    """What ``quantize_static`` is asked to write."""

    name: str
    activations: Activations
    weight_bits: Literal[7, 8]
    symmetric_activations: bool
    quantize_bias: bool = True
    per_channel: bool = True

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "activations": "int8 symmetric" if self.symmetric_activations else "uint8 asymmetric",
            "weights": f"int{self.weight_bits} per-channel symmetric",
            "bias": "int32" if self.quantize_bias else "float",
        }


TENSORRT = QdqForm("tensorrt", "s8", 8, symmetric_activations=True, quantize_bias=False)
U8S8 = QdqForm("u8s8", "u8", 8, symmetric_activations=False)
U8S7 = QdqForm("u8s7", "u8", 7, symmetric_activations=False)  # 7-bit weights: safe without VNNI
S8S7 = QdqForm("s8s7", "s8", 7, symmetric_activations=True, quantize_bias=False)  # TensorRT's form, CPU-safe

_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class Choice:
    form: QdqForm
    reason: str


def choose(runtime: str, gpu: bool, arch: str | None = None, isa: tuple[str, ...] | None = None) -> Choice:
    """The Q/DQ form for ``runtime`` on this machine (``arch``/``isa`` default to what it reports)."""
    if gpu or runtime == "tensorrt":
        return Choice(TENSORRT, "TensorRT builds explicit symmetric Q/DQ (int8 activations, per-channel weights)")
    arch = (arch or platform.machine()).lower()
    flags = tuple(isa) if isa is not None else sysinfo.isa_flags()
    if arch in ("aarch64", "arm64"):
        return Choice(U8S8, "ARM NEON/SDOT accumulate u8 x s8 in 32 bits: 8-bit weights are exact")
    if any(f in flags for f in _VNNI):
        found = next(f for f in _VNNI if f in flags)
        return Choice(U8S8, f"this CPU has {found}: u8 x s8 sums go straight to int32, 8-bit weights are exact")
    return Choice(
        U8S7,
        "this x86 CPU has no VNNI/AMX: AVX2 adds pairs of u8 x s8 products into int16, which 8-bit weights "
        "can saturate; 7-bit weights (reduce_range) cannot",
    )
