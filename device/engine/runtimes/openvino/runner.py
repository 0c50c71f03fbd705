"""OpenVINO backend: Intel's runtime for x86 (and ARM) CPUs, and Intel GPUs through its GPU plugin.

On x86 CPUs it runs our explicit Q/DQ INT8 files about twice as fast as ONNX Runtime (measured:
benchmarks/openvino-result.json), which is why ``auto`` tries it before ONNX Runtime and after TensorRT.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from device.engine.runtimes import registry
from device.engine.runtimes.base import (
    F32,
    Engine,
    EngineError,
    LayerTime,
    Precision,
    Runtime,
    RuntimeUnavailableError,
    Timing,
)
from device.engine.runtimes.openvino.config import OpenVINOConfig
from device.engine.runtimes.openvino.loader import (
    CACHE_SUBDIR,
    compile_model,
    compile_options,
    describe,
    engine_from_onnx,
    inference_precision,
    read,
)
from device.engine.runtimes.openvino.util import (
    accelerator,
    capabilities,
    device_property,
    layer_times,
    load_openvino,
    output_shapes,
)

log = logging.getLogger(__name__)


@registry.register
class OpenVINORuntime(Runtime):
    name: ClassVar[str] = "openvino"
    config_class: ClassVar[type[OpenVINOConfig]] = OpenVINOConfig
    # between TensorRT (100, a GPU) and ONNX Runtime (0): on x86 CPUs its INT8 is the fastest we measured
    priority: ClassVar[int] = 50
    # it reads ONNX Runtime's CPU files (the same Q/DQ ONNX): a release without an openvino artifact still runs
    also_runs: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    config: OpenVINOConfig

    def __init__(self, config: OpenVINOConfig | None = None) -> None:
        super().__init__(config or OpenVINOConfig())
        self._ov = load_openvino()
        self._core = self._ov.Core()
        available = [str(d) for d in self._core.available_devices]
        if self.config.device not in available:
            raise RuntimeUnavailableError(f"openvino has no {self.config.device} device here (has: {available})")
        self._caps = capabilities(self._core, self.config.device)
        self._full_name = str(device_property(self._core, self.config.device, "FULL_DEVICE_NAME", "") or "")
        self._compiled: Any = None
        self._request: Any = None
        self.loaded_from_cache: bool | None = None  # whether the last load imported a cached blob
        self.load_s = 0.0

    @classmethod
    def probe(cls) -> str | None:
        try:
            load_openvino()
        except RuntimeUnavailableError as e:
            return str(e)
        return None

    def version(self) -> str:
        return str(self._ov.get_version())

    def accelerator(self) -> str:
        return accelerator(self.config.device, self._full_name)

    def uses_gpu(self) -> bool:
        return self.config.device.startswith("GPU")

    def supported_precisions(self) -> tuple[Precision, ...]:
        """int8 where the plugin has INT8 kernels, fp16 only where it computes fp16 natively (the GPU plugin,
        ARM or AVX512-FP16 CPUs; an AVX2 CPU has no fp16 arithmetic), fp32 always."""
        reduced: list[Precision] = []
        if "INT8" in self._caps:
            reduced.append("int8")
        if "FP16" in self._caps:
            reduced.append("fp16")
        return (*reduced, "fp32")

    def build_options(self) -> dict[str, Any]:
        c = self.config
        return {
            "device": c.device,
            "threads": c.threads or 0,  # 0 as before threads was common: the cache keys stay
            "streams": c.num_streams,
            "pinning": c.cpu_pinning,
            "bf16": c.allow_bf16,
        }

    def compiled_property(self, name: str) -> Any:
        """A property of the loaded compiled model, as OpenVINO resolved it (``INFERENCE_NUM_THREADS``,
        ``NUM_STREAMS``, ``INFERENCE_PRECISION_HINT``, ``EXECUTION_DEVICES``...)."""
        if self._compiled is None:
            raise EngineError(f"{self.name}: no engine loaded; call load() first")
        try:
            return self._compiled.get_property(name)
        except RuntimeError as e:
            raise EngineError(f"openvino has no compiled-model property {name!r}") from e

    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        return engine_from_onnx(self._core, self.config, self._caps, onnx_path, precision, out_dir, self.name)

    def _compile(self, engine: Engine, cache_dir: Path | None, profile: bool = False, batch: int = 0) -> Any:
        model = read(self._core, engine.path)
        shape, _, _ = describe(model, self.config.max_batch)
        if shape != engine.input_shape:
            raise EngineError(f"engine input {shape} differs from its record {engine.input_shape}")
        if batch:  # static shapes: the profiler's runtime graph then knows every node's output shape
            model.reshape([batch, *shape])
        hint = inference_precision(self.config, engine.precision, self._caps)
        options = compile_options(self._core, self.config, hint, cache_dir, profile=profile)
        return compile_model(self._core, model, self.config.device, options, engine.path.name)

    def _load_impl(self, engine: Engine) -> None:
        cache = engine.path.parent / CACHE_SUBDIR if engine.info.get("model_cache") else None
        t0 = time.perf_counter()
        self._compiled = self._compile(engine, cache)
        self.load_s = time.perf_counter() - t0
        self._request = self._compiled.create_infer_request()
        try:
            self.loaded_from_cache = bool(self._compiled.get_property("LOADED_FROM_CACHE"))
        except RuntimeError:
            self.loaded_from_cache = None
        log.info(
            "openvino loaded %s in %.2fs (%s)",
            engine.path.name,
            self.load_s,
            "from its compiled-model cache" if self.loaded_from_cache else "compiled",
        )

    def _infer_impl(self, batch: F32) -> tuple[F32, Timing | None]:
        try:
            self._request.infer({0: batch}, share_inputs=True)
            out = self._request.get_output_tensor(0).data
        except Exception as e:  # RuntimeError from the plugin
            raise EngineError(f"openvino inference failed: {str(e).strip()[:300]}") from e
        return np.array(out, dtype=np.float32, copy=True), None  # the request reuses its output buffer

    def _profile_impl(self, batch: F32, runs: int) -> list[LayerTime]:
        """OpenVINO's per-node performance counters (PERF_COUNT) on a second compiled model of the engine."""
        compiled = self._compile(self.engine, None, profile=True, batch=batch.shape[0])
        request = compiled.create_infer_request()
        per_run: list[list[Any]] = []
        try:
            for _ in range(runs + 1):  # the first run warms up and is dropped by layer_times
                request.infer({0: batch})
                per_run.append(list(request.profiling_info))
        except Exception as e:  # RuntimeError from the plugin
            raise EngineError(f"openvino profiling failed: {str(e).strip()[:300]}") from e
        shapes = output_shapes(compiled)
        return [LayerTime(x.name, x.op, x.ms, shapes.get(x.name)) for x in layer_times(per_run)]

    def _unload_impl(self) -> None:
        self._request = None
        self._compiled = None
