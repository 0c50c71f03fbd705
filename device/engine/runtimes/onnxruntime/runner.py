"""ONNX Runtime backend: the CPU provider everywhere, plus CUDA/TensorRT providers when installed.

The last resort of ``auto`` (lowest priority): it runs on any machine the device extra installs on.
"""

from __future__ import annotations

import json
import logging
import tempfile
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
from device.engine.runtimes.onnxruntime.config import OnnxRuntimeConfig
from device.engine.runtimes.onnxruntime.loader import describe, engine_from_onnx, open_session, session_options
from device.engine.runtimes.onnxruntime.util import GPU_PROVIDERS, layer_times, load_onnxruntime

log = logging.getLogger(__name__)


@registry.register
class OnnxRuntimeRuntime(Runtime):
    name: ClassVar[str] = "onnxruntime"
    config_class: ClassVar[type[OnnxRuntimeConfig]] = OnnxRuntimeConfig
    priority: ClassVar[int] = 0
    config: OnnxRuntimeConfig

    def __init__(self, config: OnnxRuntimeConfig | None = None) -> None:
        super().__init__(config or OnnxRuntimeConfig())
        self._ort = load_onnxruntime()
        self._session: Any = None
        self._input_name = "input"
        self._output_name = "logits"
        self.providers = self._choose_providers()

    @classmethod
    def probe(cls) -> str | None:
        try:
            load_onnxruntime()
        except RuntimeUnavailableError as e:
            return str(e)
        return None

    def _choose_providers(self) -> list[str]:
        available = self._ort.get_available_providers()
        if self.config.providers:
            missing = [p for p in self.config.providers if p not in available]
            if missing:
                raise RuntimeUnavailableError(
                    f"onnxruntime providers {missing} are not available here (have: {available})"
                )
            return list(self.config.providers)
        # The TensorRT EP is left out by default: the native TensorRT backend does that job better.
        return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]

    def version(self) -> str:
        return str(self._ort.__version__)

    def accelerator(self) -> str:
        if self.providers[0] in GPU_PROVIDERS:
            return f"cuda:{self.providers[0]}"
        return "cpu"

    def supported_precisions(self) -> tuple[Precision, ...]:
        if self.uses_gpu():
            return ("fp16", "int8", "fp32")
        return ("int8", "fp32")  # no FP16 kernels worth having on the CPU provider

    def build_options(self) -> dict[str, Any]:
        return {"providers": self.providers, "opt": self.config.graph_optimization}

    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        return engine_from_onnx(self._ort, self.config, self.providers, onnx_path, precision, out_dir, self.name)

    def _load_impl(self, engine: Engine) -> None:
        self._session = open_session(self._ort, engine.path, self.config, self.providers)
        shape, self._input_name, _ = describe(self._session, self.config.max_batch)
        if shape != engine.input_shape:
            raise EngineError(f"engine input {shape} differs from its record {engine.input_shape}")
        self._output_name = str(self._session.get_outputs()[0].name)

    def _infer_impl(self, batch: F32) -> tuple[F32, Timing | None]:
        try:
            out = self._session.run([self._output_name], {self._input_name: batch})[0]
        except Exception as e:
            raise EngineError(f"onnxruntime inference failed: {str(e).strip()[:300]}") from e
        return np.asarray(out, dtype=np.float32), None

    def _unload_impl(self) -> None:
        self._session = None

    def _profile_impl(self, batch: F32, runs: int) -> list[LayerTime]:
        """ORT's own profiler on a second session over the same engine file: per-node kernel times."""
        with tempfile.TemporaryDirectory() as tmp:
            so = session_options(self._ort, self.config)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            try:
                session = self._ort.InferenceSession(str(self.engine.path), sess_options=so, providers=self.providers)
                for _ in range(runs + 1):  # the first run warms up and is dropped below
                    session.run([self._output_name], {self._input_name: batch})
                events = json.loads(Path(session.end_profiling()).read_text())
            except Exception as e:  # ORT raises its own types
                raise EngineError(f"onnxruntime profiling failed: {str(e).strip()[:300]}") from e
        return layer_times(events)
