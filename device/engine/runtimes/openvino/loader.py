"""ONNX -> engine for OpenVINO, and the compiled models the runner opens on engine files.

OpenVINO reads our ONNX, explicit Q/DQ included, with its own ONNX frontend: QuantizeLinear becomes
FakeQuantize, and its low-precision transformations turn FakeQuantize -> Convolution into INT8 kernels
(``jit_avx2_I8`` and the like). No conversion step is left to the user.

"Building" copies the ONNX file into the engine directory as the engine file and compiles it once
with OpenVINO's model cache (``CACHE_DIR``) in ``ov-cache/`` beside it, so every later load imports
the compiled blob instead of compiling again. The cache is hashed from the model's content (it is
compiled from an ``ov.Model``, not a path), so it stays valid when the engine cache renames the build
directory into place. It lives inside the engine cache entry, whose key has the OpenVINO version and
the accelerator (CPU model and ISA): a blob never meets a CPU or an OpenVINO it was not made for.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from device.engine.runtimes.base import Engine, EngineError, Precision
from device.engine.runtimes.openvino.config import OpenVINOConfig
from device.engine.runtimes.openvino.util import convolution_kernels, device_property

log = logging.getLogger(__name__)

ENGINE_FILE = "model.onnx"
CACHE_SUBDIR = "ov-cache"


def read(core: Any, path: Path) -> Any:
    try:
        return core.read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError and its own frontend errors
        raise EngineError(f"openvino cannot read {path.name}: {str(e).strip()[:500]}") from e


def describe(model: Any, default_max_batch: int) -> tuple[tuple[int, int, int], str, int]:
    """(C, H, W), input name and largest batch of a model's one input."""
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) < 1:
        raise EngineError(f"expected a model with one input and one output, got {len(inputs)}/{len(outputs)}")
    shape = inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or not all(d.is_static for d in list(shape)[1:]):
        raise EngineError(f"model input must be N x C x H x W with fixed C, H, W; got {shape}")
    if str(inputs[0].get_element_type()) not in ("<Type: 'float32'>", "f32"):
        raise EngineError(f"model input must be float32, got {inputs[0].get_element_type()}")
    n, c, h, w = list(shape)
    max_batch = n.get_length() if n.is_static else default_max_batch
    return (c.get_length(), h.get_length(), w.get_length()), str(inputs[0].get_any_name()), int(max_batch)


def is_quantized(model: Any) -> bool:
    """Whether the file is explicit Q/DQ (its QuantizeLinear nodes read as FakeQuantize)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def check_precision(model: Any, precision: Precision, name: str) -> None:
    """The engine is what the file is: INT8 only from Q/DQ, and a Q/DQ file is never called fp32 or fp16."""
    quantized = is_quantized(model)
    if precision == "int8" and not quantized:
        raise EngineError(
            f"{name} has no Q/DQ nodes: OpenVINO runs INT8 only from an explicit Q/DQ file "
            "(the release's INT8 artifact, or one `edgeloop-agent calibrate` makes)"
        )
    if precision != "int8" and quantized:
        raise EngineError(f"{name} is an explicit Q/DQ (INT8) file: build it as int8, not {precision}")


def inference_precision(config: OpenVINOConfig, precision: Precision, caps: tuple[str, ...]) -> str:
    """INFERENCE_PRECISION_HINT: fp16 where the plugin computes it natively, bf16 only when allowed, else f32."""
    if precision == "fp16" and "FP16" in caps:
        return "f16"
    if precision != "fp16" and config.allow_bf16 and "BF16" in caps:
        return "bf16"
    return "f32"  # an fp16 file on a plugin without native fp16 runs its (exact) fp16 weights in f32


def compile_options(
    core: Any, config: OpenVINOConfig, hint: str, cache_dir: Path | None, profile: bool = False
) -> dict[str, Any]:
    """The compile properties, each only where the device's plugin has it (the GPU plugin has no thread count)."""
    wanted: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": config.num_streams,
        "INFERENCE_PRECISION_HINT": hint,
        "PERF_COUNT": profile,
    }
    if config.threads:
        wanted["INFERENCE_NUM_THREADS"] = config.threads
    if config.cpu_pinning is not None:
        wanted["ENABLE_CPU_PINNING"] = config.cpu_pinning
    supported = device_property(core, config.device, "SUPPORTED_PROPERTIES", {}) or {}
    options = {k: v for k, v in wanted.items() if k in supported}
    if cache_dir is not None:
        options["CACHE_DIR"] = str(cache_dir)  # a Core property, taken by compile_model on every device
    return options


def compile_model(core: Any, model: Any, device: str, options: dict[str, Any], name: str) -> Any:
    try:
        return core.compile_model(model, device, options)
    except Exception as e:  # RuntimeError from the plugin: unsupported op, out of memory...
        raise EngineError(f"openvino cannot compile {name} for {device}: {str(e).strip()[:500]}") from e


def execution_devices(compiled: Any) -> list[str]:
    """Where a compiled model runs (``['CPU']``), as OpenVINO reports it."""
    try:
        return [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
    except RuntimeError:
        return []


def engine_from_onnx(
    core: Any,
    config: OpenVINOConfig,
    caps: tuple[str, ...],
    onnx_path: Path,
    precision: Precision,
    out_dir: Path,
    runtime: str,
) -> Engine:
    """Copy ``onnx_path`` into ``out_dir`` as the engine file and compile it once, filling its model cache."""
    model = read(core, onnx_path)
    shape, input_name, max_batch = describe(model, config.max_batch)
    check_precision(model, precision, onnx_path.name)
    hint = inference_precision(config, precision, caps)
    cache_dir = out_dir / CACHE_SUBDIR if "EXPORT_IMPORT" in caps else None
    compiled = compile_model(core, model, config.device, compile_options(core, config, hint, cache_dir), onnx_path.name)
    kernels = convolution_kernels(compiled)
    if precision == "int8" and not kernels["conv_int8"]:
        log.warning("%s: openvino runs none of its convolutions in INT8 (%s)", onnx_path.name, kernels["conv_kernels"])
    engine_path = out_dir / ENGINE_FILE
    shutil.copyfile(onnx_path, engine_path)
    return Engine(
        path=engine_path,
        runtime=runtime,
        precision=precision,
        input_name=input_name,
        input_shape=shape,
        max_batch=max_batch,
        info={
            "device": config.device,
            "execution_devices": execution_devices(compiled),
            "inference_precision": hint,
            "model_cache": CACHE_SUBDIR if cache_dir is not None else None,
            **kernels,
        },
    )
