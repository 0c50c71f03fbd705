"""ONNX -> engine for ONNX Runtime, and the sessions the runner opens on engine files.

"Building" here means letting ORT optimise the graph once (constant folding, Conv+Add+Relu fusion,
Q/DQ -> QLinearConv for INT8, CPU layout transforms) and saving the optimised model as the engine
file. Like a TensorRT plan it is tied to the ORT version and the machine, which the engine cache key
records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from device.engine.runtimes.base import Engine, EngineError, Precision
from device.engine.runtimes.onnxruntime.config import OnnxRuntimeConfig

ENGINE_FILE = "model.ort.onnx"


def session_options(ort: Any, config: OnnxRuntimeConfig, optimized_path: Path | None = None) -> Any:
    so = ort.SessionOptions()
    levels = ort.GraphOptimizationLevel
    so.graph_optimization_level = {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    threads = config.threads or (os.cpu_count() or 1)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # ORT's own logger to errors only; we log what matters
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


def open_session(
    ort: Any, path: Path, config: OnnxRuntimeConfig, providers: list[str], optimized_path: Path | None = None
) -> Any:
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(ort, config, optimized_path), providers=providers
        )
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        raise EngineError(f"onnxruntime cannot load {path.name}: {str(e).strip()[:500]}") from e


def describe(session: Any, default_max_batch: int) -> tuple[tuple[int, int, int], str, int]:
    """(C, H, W), input name and largest batch of a session's one input."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise EngineError(f"expected a model with one input and one output, got {len(inputs)}/{len(outputs)}")
    dims = inputs[0].shape
    if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
        raise EngineError(f"model input must be N x C x H x W with fixed C, H, W; got {dims}")
    if inputs[0].type != "tensor(float)":
        raise EngineError(f"model input must be float32, got {inputs[0].type}")
    max_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else default_max_batch
    return (int(dims[1]), int(dims[2]), int(dims[3])), str(inputs[0].name), int(max_batch)


def engine_from_onnx(
    ort: Any,
    config: OnnxRuntimeConfig,
    providers: list[str],
    onnx_path: Path,
    precision: Precision,
    out_dir: Path,
    runtime: str,
) -> Engine:
    """Optimise ``onnx_path`` once and save the result as the engine file in ``out_dir``."""
    engine_path = out_dir / ENGINE_FILE
    session = open_session(ort, onnx_path, config, providers, optimized_path=engine_path)
    shape, input_name, max_batch = describe(session, config.max_batch)
    if not engine_path.is_file():  # the provider could not serialise (e.g. compiled EP nodes)
        engine_path.write_bytes(onnx_path.read_bytes())
    return Engine(
        path=engine_path,
        runtime=runtime,
        precision=precision,
        input_name=input_name,
        input_shape=shape,
        max_batch=max_batch,
        info={"providers": providers},
    )
