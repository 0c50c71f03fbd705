"""The ``[runtime]`` table of the OpenVINO backend (``type = "openvino"``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device.runtimes.base import RuntimeConfig


class OpenVINOConfig(RuntimeConfig):
    type: Literal["openvino"] = "openvino"
    device: str = Field(
        "CPU",
        pattern=r"^(CPU|GPU(\.[0-9]{1,2})?)$",
        description="OpenVINO device plugin: CPU (x86 or ARM), or GPU / GPU.N (Intel graphics)",
    )
    inference_num_threads: int = Field(
        0, ge=0, description="CPU threads per inference call; 0 = OpenVINO's choice (one per physical core)"
    )
    num_streams: int = Field(
        1,
        ge=1,
        description=(
            "parallel inference streams; 1 lets each call use every thread, which is what one synchronous caller "
            "(the benchmark, the serving batcher) needs: more streams split the threads between calls that never "
            "overlap"
        ),
    )
    cpu_pinning: bool | None = Field(
        None, description="pin inference threads to cores (ENABLE_CPU_PINNING); unset: OpenVINO's default"
    )
    allow_bf16: bool = Field(
        False,
        description=(
            "let fp32 engines (and the float parts of int8 ones) compute in bf16 on CPUs with AMX / AVX512-BF16, "
            "which is OpenVINO's default there; off, fp32 means IEEE FP32"
        ),
    )
    max_batch: int = Field(1024, ge=1, description="largest batch accepted by a dynamic-batch model")
