"""ONNX Runtime backend: the CPU provider everywhere, plus CUDA/TensorRT providers when installed.

"Building" here means letting ORT optimise the graph once (constant folding, Conv+Add+Relu fusion,
Q/DQ -> QLinearConv for INT8, CPU layout transforms) and saving the optimised model as the engine
file. Like a TensorRT plan it is tied to the ORT version and the machine, which the engine cache key
records.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.runtimes.base import (
    F32,
    Engine,
    EngineError,
    LayerTime,
    Precision,
    Runtime,
    RuntimeUnavailableError,
    Timing,
    mean_after_warmup,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `pip install 'edgeloop[device]'` (or `pip install onnxruntime`)"
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxRuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] | None = Field(
        None, description="execution providers in priority order; default: CUDA when present, then CPU"
    )
    intra_op_threads: int = Field(0, ge=0, description="threads per operator; 0 = one per core")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    max_batch: int = Field(1024, ge=1, description="largest batch accepted by a dynamic-batch model")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeUnavailableError(f"the onnxruntime backend needs the onnxruntime package: {INSTALL_HINT}") from e
    return onnxruntime


class OnnxRuntimeRuntime(Runtime):
    name: ClassVar[str] = "onnxruntime"

    def __init__(self, config: OnnxRuntimeConfig | None = None) -> None:
        super().__init__()
        self.config = config or OnnxRuntimeConfig()
        self._ort = _ort()
        self._session: Any = None
        self._input_name = "input"
        self._output_name = "logits"
        self.providers = self._choose_providers()

    @classmethod
    def probe(cls) -> str | None:
        try:
            _ort()
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
        if self.providers[0] in _GPU_PROVIDERS:
            return f"cuda:{self.providers[0]}"
        return "cpu"

    def supported_precisions(self) -> tuple[Precision, ...]:
        if self.uses_gpu():
            return ("fp16", "int8", "fp32")
        return ("int8", "fp32")  # no FP16 kernels worth having on the CPU provider

    def build_options(self) -> dict[str, Any]:
        return {"providers": self.providers, "opt": self.config.graph_optimization}

    def _session_options(self, optimized_path: Path | None = None) -> Any:
        so = self._ort.SessionOptions()
        levels = self._ort.GraphOptimizationLevel
        so.graph_optimization_level = {
            "disable": levels.ORT_DISABLE_ALL,
            "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED,
            "all": levels.ORT_ENABLE_ALL,
        }[self.config.graph_optimization]
        threads = self.config.intra_op_threads or (os.cpu_count() or 1)
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # ORT's own logger to errors only; we log what matters
        if optimized_path is not None:
            so.optimized_model_filepath = str(optimized_path)
        return so

    def _open(self, path: Path, optimized_path: Path | None = None) -> Any:
        try:
            return self._ort.InferenceSession(
                str(path), sess_options=self._session_options(optimized_path), providers=self.providers
            )
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise EngineError(f"onnxruntime cannot load {path.name}: {str(e).strip()[:500]}") from e

    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        engine_path = out_dir / "model.ort.onnx"
        session = self._open(onnx_path, optimized_path=engine_path)
        shape, input_name, max_batch = self._describe(session)
        if not engine_path.is_file():  # the provider could not serialise (e.g. compiled EP nodes)
            engine_path.write_bytes(onnx_path.read_bytes())
        return Engine(
            path=engine_path,
            runtime=self.name,
            precision=precision,
            input_name=input_name,
            input_shape=shape,
            max_batch=max_batch,
            info={"providers": self.providers},
        )

    def _describe(self, session: Any) -> tuple[tuple[int, int, int], str, int]:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise EngineError(f"expected a model with one input and one output, got {len(inputs)}/{len(outputs)}")
        dims = inputs[0].shape
        if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
            raise EngineError(f"model input must be N x C x H x W with fixed C, H, W; got {dims}")
        if inputs[0].type != "tensor(float)":
            raise EngineError(f"model input must be float32, got {inputs[0].type}")
        max_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else self.config.max_batch
        return (int(dims[1]), int(dims[2]), int(dims[3])), str(inputs[0].name), int(max_batch)

    def _load_impl(self, engine: Engine) -> None:
        self._session = self._open(engine.path)
        shape, self._input_name, _ = self._describe(self._session)
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
            so = self._session_options()
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


def layer_times(events: list[dict[str, Any]]) -> list[LayerTime]:
    """Mean kernel time per node from an ORT profile (Chrome trace JSON), first call of each dropped."""
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name.removesuffix("_kernel_time")
        durations.setdefault(node, []).append(float(e.get("dur", 0)) / 1e3)  # microseconds -> ms
        args = e.get("args", {})
        ops[node] = str(args.get("op_name", "?"))
        out = args.get("output_type_shape") or []
        dims = next(iter(out[0].values()), None) if out and isinstance(out[0], dict) else None
        shapes[node] = tuple(int(d) for d in dims) if dims else None
    # dicts keep first-seen order: execution order
    return [LayerTime(node, ops[node], mean_after_warmup(ds), shapes[node]) for node, ds in durations.items()]
