"""The ``[runtime]`` table of the OpenVINO backend (``type = "openvino"``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device.engine.runtimes.base import RuntimeConfig, legacy_threads


class OpenVINOConfig(RuntimeConfig):
    type: Literal["openvino"] = "openvino"
    device: str = Field(
        "CPU",
        pattern=r"^(CPU|GPU(\.[0-9]{1,2})?)$",
        description="OpenVINO device plugin: CPU (x86 or ARM), or GPU / GPU.N (Intel graphics)",
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

    @model_validator(mode="before")
    @classmethod
    def _legacy_threads(cls, data: object) -> object:
        """``inference_num_threads`` was this table's name for ``threads`` (OpenVINO's INFERENCE_NUM_THREADS; on
        the CPU plugin only, unset: one per physical core)."""
        return legacy_threads(data, "inference_num_threads", "runtime.openvino")
