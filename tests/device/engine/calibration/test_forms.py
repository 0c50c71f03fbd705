from __future__ import annotations

import pytest

from device.engine.calibration import forms


@pytest.mark.parametrize(
    ("runtime", "gpu", "arch", "isa", "expected"),
    [
        ("tensorrt", True, "aarch64", ("asimddp",), forms.TENSORRT),  # a Jetson's GPU
        ("onnxruntime", True, "x86_64", ("avx2",), forms.TENSORRT),  # ORT on CUDA: TensorRT's form too
        ("onnxruntime", False, "x86_64", ("avx2",), forms.U8S7),  # AMD EPYC / older Xeon without VNNI
        ("onnxruntime", False, "x86_64", ("avx2", "avx512f", "avx512_vnni"), forms.U8S8),  # Cascade Lake+
        ("onnxruntime", False, "x86_64", ("avx2", "avx_vnni"), forms.U8S8),  # Alder Lake and later
        ("onnxruntime", False, "x86_64", ("avx2", "avx512f", "amx_int8", "amx_tile"), forms.U8S8),  # Sapphire Rapids
        ("onnxruntime", False, "x86_64", ("avx2", "avx512f"), forms.U8S7),  # Skylake-SP: AVX-512 without VNNI
        ("onnxruntime", False, "aarch64", ("asimddp",), forms.U8S8),  # a Jetson's CPU
    ],
)
def test_the_form_follows_runtime_and_isa(
    runtime: str, gpu: bool, arch: str, isa: tuple[str, ...], expected: forms.QdqForm
) -> None:
    choice = forms.choose(runtime, gpu, arch, isa)
    assert choice.form == expected and choice.reason


def test_forms_say_what_they_are() -> None:
    assert forms.U8S7.weight_bits == 7 and not forms.U8S7.symmetric_activations
    assert forms.TENSORRT.symmetric_activations and not forms.TENSORRT.quantize_bias
    assert forms.S8S7.describe()["weights"] == "int7 per-channel symmetric"
