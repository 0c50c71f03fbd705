"""ONNX -> serialized TensorRT engine (TensorRT 10 API; ready for TensorRT 11's strongly typed-only builder).

* The ONNX parser, one optimisation profile per batch range the engine serves (``opt_batches``), a
  workspace limit (small Jetsons run out of memory while building) and a persisted timing cache.
* The precision is what the file is, never a silent downgrade: INT8 comes only from explicit Q/DQ
  ONNX (a plain FP32 file is refused for int8, and a Q/DQ file for fp16/fp32). FP16 is the FP16
  builder flag where this TensorRT still has it (10), else an FP16 ONNX built strongly typed (11).
  FP32 is IEEE FP32: TF32 is cleared unless ``allow_tf32``.
* 2:4 sparse weights when asked for and the GPU has sparse Tensor Cores (the runner decides).
* DLA (``dla_core``): the layers go to that DLA core, those it cannot run to the GPU (``gpu_fallback``).
  DLA runs FP16 and INT8 only, so an FP32 build for it is refused; TensorRT 10 builds it weakly typed
  with its precision flags (the documented DLA path), 11 from the FP16 or Q/DQ file's own types. DLA
  has no dynamic dimensions: each optimisation profile is one batch (``profile_batches``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Literal

from device.engine.runtimes.base import Engine, EngineError, Precision
from device.engine.runtimes.tensorrt.config import TensorRTConfig
from device.engine.runtimes.tensorrt.util import (
    TrtBuilder,
    TrtBuilderConfig,
    TrtModule,
    TrtNetwork,
    TrtObject,
    has_weak_typing,
    logger_for,
    set_weak_precision_flags,
    use_dla,
    use_tf32,
)

log = logging.getLogger(__name__)

ENGINE_FILE = "model.plan"
OnnxKind = Literal["int8", "fp16", "fp32"]
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def onnx_kind(onnx_path: Path) -> OnnxKind:
    """What the file itself runs as: int8 (explicit Q/DQ nodes), fp16 (FP16 weights, FP32 I/O) or fp32."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
        return "int8"
    kinds = {init.data_type for init in model.graph.initializer}
    if onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds:
        return "fp16"
    return "fp32"


def strongly_typed(trt: TrtModule, name: str, kind: OnnxKind, precision: Precision, dla: bool = False) -> bool:
    """Whether to build ``precision`` from a file of ``kind`` strongly typed; refuse what would be mislabelled."""
    if dla and precision == "fp32":
        raise EngineError(
            f"DLA runs FP16 and INT8 only, not fp32: build {name} as fp16 or int8 for DLA (on TensorRT 11 from the "
            "release's FP16 or Q/DQ INT8 ONNX), or leave [runtime] dla_core unset to run fp32 on the GPU"
        )
    if precision == "int8" and kind != "int8":
        raise EngineError(
            f"{name} has no Q/DQ nodes: TensorRT builds INT8 only from an explicit Q/DQ ONNX (the *-int8-trt "
            f"file of a release); build this {kind} file as {kind}"
        )
    if kind == "int8" and precision != "int8":
        raise EngineError(f"{name} is quantized (Q/DQ): TensorRT runs it in INT8, so build it as int8, not {precision}")
    weak = has_weak_typing(trt)
    if not weak and kind != precision:
        raise EngineError(
            f"this TensorRT builds only strongly typed networks, which run {name} as {kind}: build it as {kind}, "
            f"or ship the {precision} ONNX of the release"
        )
    # TensorRT 10 builds an FP16 file strongly typed, except for DLA: its DLA path is the FP16 flag
    return (kind == "fp16" and precision == "fp16" and not dla) or not weak


def _parse(trt: TrtModule, onnx_path: Path, typed: bool) -> tuple[TrtBuilder, TrtNetwork, TrtObject]:
    """Builder, network and parser; the caller keeps the parser alive until the build (it owns the weights)."""
    logger = logger_for(trt)
    flags = 0
    if typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    builder: TrtBuilder = trt.Builder(logger)
    network: TrtNetwork = builder.create_network(flags)
    parser: TrtObject = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errors)[:800]}")
    return builder, network, parser


def _input(network: TrtNetwork) -> tuple[TrtObject, tuple[int, ...], tuple[int, int, int]]:
    """The network's one input, its dims (batch may be -1) and its C, H, W."""
    if network.num_inputs != 1:
        raise EngineError(f"expected one network input, got {network.num_inputs}")
    inp: TrtObject = network.get_input(0)
    dims = tuple(inp.shape)
    if len(dims) != 4:
        raise EngineError(f"model input must be N x C x H x W, got {dims}")
    return inp, dims, (int(dims[1]), int(dims[2]), int(dims[3]))


def _builder_config(
    trt: TrtModule, builder: TrtBuilder, config: TensorRTConfig, precision: Precision, typed: bool, sparse: bool
) -> tuple[TrtBuilderConfig, bool]:
    """The builder config and whether FP32 layers may run as TF32."""
    bc: TrtBuilderConfig = builder.create_builder_config()
    bc.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    bc.builder_optimization_level = config.builder_optimization_level
    if not typed:
        set_weak_precision_flags(trt, bc, precision)
    tf32 = use_tf32(trt, bc, allowed=config.allow_tf32 or precision != "fp32")
    if config.dla_core is not None:
        use_dla(trt, builder, bc, config.dla_core, config.gpu_fallback)
    if sparse:
        bc.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    return bc, tf32


def _batch_profiles(
    builder: TrtBuilder,
    bc: TrtBuilderConfig,
    inp: TrtObject,
    dims: tuple[int, ...],
    chw: tuple[int, int, int],
    config: TensorRTConfig,
) -> tuple[int, list[tuple[int, int, int]]]:
    """Add one optimisation profile per batch range (when the batch is dynamic); return the largest batch
    and the profiles' (min, opt, max) batches."""
    if dims[0] != -1:
        fixed = int(dims[0])
        return fixed, [(fixed, fixed, fixed)]
    profiles = config.profile_batches()
    for lo, opt, hi in profiles:
        profile: TrtObject = builder.create_optimization_profile()
        profile.set_shape(inp.name, (lo, *chw), (opt, *chw), (hi, *chw))
        bc.add_optimization_profile(profile)
    return config.max_batch, profiles


def _use_timing_cache(bc: TrtBuilderConfig, cache_path: Path | None) -> bool:
    """Start from the persisted timing cache; a corrupt or stale one (another TensorRT or GPU) is replaced by
    an empty one. Return whether the persisted one is in use."""
    blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if blob:
        try:
            cache: TrtObject = bc.create_timing_cache(blob)
            if cache is not None and bc.set_timing_cache(cache, ignore_mismatch=False):
                return True
        except (RuntimeError, TypeError, ValueError) as e:  # a corrupt blob (pybind11 maps C++ errors to these)
            log.debug("timing cache %s unreadable: %s", cache_path, e)
        log.warning("timing cache %s does not fit this TensorRT and GPU: starting a new one", cache_path)
    fresh: TrtObject = bc.create_timing_cache(b"")
    if fresh is None or not bc.set_timing_cache(fresh, ignore_mismatch=False):
        raise EngineError("TensorRT could not set an empty timing cache")
    return False


def _save_timing_cache(bc: TrtBuilderConfig, cache_path: Path | None) -> None:
    """Persist the timing cache; failing to is a warning, never a failed build (the engine is written)."""
    if cache_path is None:
        return
    tmp = cache_path.with_suffix(".tmp")
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(memoryview(bc.get_timing_cache().serialize()))
        tmp.replace(cache_path)
    except (OSError, RuntimeError) as e:  # a full disk, or TensorRT failing to serialize; the engine is written
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.warning("could not save the timing cache %s: %s", cache_path, e)


def engine_from_onnx(
    trt: TrtModule,
    config: TensorRTConfig,
    onnx_path: Path,
    precision: Precision,
    out_dir: Path,
    *,
    sparse: bool,
    runtime: str,
    version: str,
    timing_cache: Path | None,
) -> Engine:
    """Parse ``onnx_path``, build a plan for ``precision`` and write it (and ``build.json``) to ``out_dir``."""
    kind = onnx_kind(onnx_path)
    typed = strongly_typed(trt, onnx_path.name, kind, precision, dla=config.dla_core is not None)
    builder, network, _parser = _parse(trt, onnx_path, typed)  # _parser: alive until the build
    inp, dims, chw = _input(network)
    bc, tf32 = _builder_config(trt, builder, config, precision, typed, sparse)
    max_batch, profiles = _batch_profiles(builder, bc, inp, dims, chw, config)
    reused = _use_timing_cache(bc, timing_cache)
    plan: TrtObject = builder.build_serialized_network(network, bc)
    if plan is None:
        recent = "; ".join(logger_for(trt).errors[-5:])
        raise EngineError(f"TensorRT failed to build {onnx_path.name} ({precision}): {recent or 'see log'}")
    engine_path = out_dir / ENGINE_FILE
    engine_path.write_bytes(memoryview(plan))
    _save_timing_cache(bc, timing_cache)
    info = {
        "strongly_typed": typed,
        "sparse": sparse,
        "tf32": tf32,
        "profiles": [list(p) for p in profiles],
        "timing_cache_reused": reused,
        "trt": version,
        "dla_core": config.dla_core,  # the runner makes it the runtime's DLA core before deserializing
        "gpu_fallback": config.gpu_fallback if config.dla_core is not None else None,
    }
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
