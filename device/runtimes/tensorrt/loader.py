"""ONNX -> serialized TensorRT engine (TensorRT 10 API; ready for TensorRT 11's strongly typed-only builder).

* The ONNX parser, a dynamic-batch optimisation profile, a workspace limit (small Jetsons run out
  of memory while building) and a persisted timing cache.
* FP16: the FP16 builder flag where this TensorRT still has it; otherwise (TensorRT 11) an FP16
  ONNX built as a strongly typed network. INT8 comes only from explicit Q/DQ ONNX.
* 2:4 sparse weights when asked for and the GPU has sparse Tensor Cores (the runner decides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from device.runtimes.base import Engine, EngineError, Precision
from device.runtimes.tensorrt.config import TensorRTConfig
from device.runtimes.tensorrt.util import logger_for

ENGINE_FILE = "model.plan"


def onnx_is_fp16(onnx_path: Path) -> bool:
    """True when the ONNX file's float weights are FP16 (an FP16 export, inputs/outputs FP32)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    kinds = {init.data_type for init in model.graph.initializer}
    return onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds


def _strongly_typed(trt: Any, onnx_path: Path, precision: Precision) -> bool:
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")  # removed with weak typing in TensorRT 11
    fp16_onnx = precision == "fp16" and onnx_is_fp16(onnx_path)
    if precision == "fp16" and not fp16_onnx and not has_fp16_flag:
        raise EngineError("this TensorRT builds only strongly typed networks: ship an FP16 ONNX for fp16")
    return fp16_onnx or not has_fp16_flag


def _parse(trt: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> tuple[Any, Any, Any]:
    """Builder, network and parser; the caller keeps the parser alive until the build (it owns the weights)."""
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errors)[:800]}")
    return builder, network, parser


def _input(network: Any) -> tuple[Any, tuple[int, ...], tuple[int, int, int]]:
    """The network's one input, its dims (batch may be -1) and its C, H, W."""
    if network.num_inputs != 1:
        raise EngineError(f"expected one network input, got {network.num_inputs}")
    inp = network.get_input(0)
    dims = tuple(inp.shape)
    if len(dims) != 4:
        raise EngineError(f"model input must be N x C x H x W, got {dims}")
    return inp, dims, (int(dims[1]), int(dims[2]), int(dims[3]))


def _builder_config(
    trt: Any, builder: Any, config: TensorRTConfig, precision: Precision, strongly_typed: bool, sparse: bool
) -> Any:
    bc = builder.create_builder_config()
    bc.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    bc.builder_optimization_level = config.builder_optimization_level
    if not strongly_typed:
        if precision in ("fp16", "int8"):
            bc.set_flag(trt.BuilderFlag.FP16)  # let non-quantized layers run in FP16 too
        if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
            bc.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ; no calibrator is ever set
    if sparse:
        bc.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    return bc


def _batch_profile(
    builder: Any, bc: Any, inp: Any, dims: tuple[int, ...], chw: tuple[int, int, int], config: TensorRTConfig
) -> int:
    """Add the dynamic-batch optimisation profile (when the batch is dynamic); return the largest batch."""
    max_batch = config.max_batch
    if dims[0] == -1:
        profile = builder.create_optimization_profile()
        opt = min(config.opt_batch, max_batch)
        profile.set_shape(inp.name, (1, *chw), (opt, *chw), (max_batch, *chw))
        bc.add_optimization_profile(profile)
    else:
        max_batch = int(dims[0])
    return max_batch


def _use_timing_cache(bc: Any, cache_path: Path | None) -> None:
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = bc.create_timing_cache(cache_bytes)
    bc.set_timing_cache(cache, ignore_mismatch=False)


def _save_timing_cache(bc: Any, cache_path: Path | None) -> None:
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_bytes(memoryview(bc.get_timing_cache().serialize()))
        tmp.replace(cache_path)


def engine_from_onnx(
    trt: Any,
    config: TensorRTConfig,
    onnx_path: Path,
    precision: Precision,
    out_dir: Path,
    *,
    sparse: bool,
    runtime: str,
    version: str,
) -> Engine:
    """Parse ``onnx_path``, build a plan for ``precision`` and write it (and ``build.json``) to ``out_dir``."""
    logger = logger_for(trt)
    strongly_typed = _strongly_typed(trt, onnx_path, precision)
    builder, network, _parser = _parse(trt, logger, onnx_path, strongly_typed)  # _parser: alive until the build
    inp, dims, chw = _input(network)
    bc = _builder_config(trt, builder, config, precision, strongly_typed, sparse)
    max_batch = _batch_profile(builder, bc, inp, dims, chw, config)
    _use_timing_cache(bc, config.timing_cache)
    plan = builder.build_serialized_network(network, bc)
    if plan is None:
        recent = "; ".join(logger.errors[-5:])
        raise EngineError(f"TensorRT failed to build {onnx_path.name} ({precision}): {recent or 'see log'}")
    engine_path = out_dir / ENGINE_FILE
    engine_path.write_bytes(memoryview(plan))
    _save_timing_cache(bc, config.timing_cache)
    info = {"strongly_typed": strongly_typed, "sparse": sparse, "trt": version}
    (out_dir / "build.json").write_text(json.dumps(info))
    return Engine(
        path=engine_path,
        runtime=runtime,
        precision=precision,
        input_name=str(inp.name),
        input_shape=chw,
        max_batch=max_batch,
        info=info,
    )
