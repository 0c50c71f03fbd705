"""TensorRT backend (TensorRT 10 API; ready for TensorRT 11's strongly typed-only builder).

* ONNX -> serialized engine with the ONNX parser, a dynamic-batch optimisation profile, a workspace
  limit (small Jetsons run out of memory while building) and a persisted timing cache.
* FP16: the FP16 builder flag where this TensorRT still has it; otherwise (TensorRT 11) an FP16
  ONNX built as a strongly typed network. INT8 comes only from explicit Q/DQ ONNX.
* 2:4 sparse weights when asked for and the GPU has sparse Tensor Cores (compute capability >= 8.0).
* Buffers, streams and events through cuda-python's runtime API; every CUDA status is checked.
  Host-to-device copy, compute and device-to-host copy are timed separately with CUDA events.

TensorRT and cuda-python are imported lazily, so this module imports on any machine.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
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

INSTALL_HINT = (
    "on a Jetson, TensorRT comes with JetPack (apt install python3-libnvinfer; make the venv with "
    "--system-site-packages); on x86 `pip install 'edgeloop[jetson]'`. cuda-python is needed for buffers."
)


class TensorRTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["tensorrt"] = "tensorrt"
    workspace_mb: int = Field(512, ge=16, description="builder workspace limit (keep small on 4-8 GB Jetsons)")
    max_batch: int = Field(256, ge=1, description="largest batch of the optimisation profile")
    opt_batch: int = Field(1, ge=1, description="batch size the builder tunes for")
    sparse_weights: bool = Field(False, description="let TensorRT use 2:4 sparse kernels (Ampere/Orin+)")
    builder_optimization_level: int = Field(3, ge=0, le=5)
    timing_cache: Path | None = Field(None, description="persisted timing cache file (default: state dir)")
    device_index: int = Field(0, ge=0)


# --- lazy imports ------------------------------------------------------------------------------


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeUnavailableError(f"the tensorrt backend needs TensorRT: {INSTALL_HINT}") from e
    return tensorrt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise RuntimeUnavailableError(f"the tensorrt backend needs cuda-python: {INSTALL_HINT}") from e
    return cudart


def _check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python call's (status, *values) tuple, raising on any non-success status."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise EngineError(f"CUDA {what} failed: {text.decode() if isinstance(text, bytes) else text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _make_logger(trt: Any) -> Any:
    """Bridge TensorRT's logger into stdlib logging (one logger per process is enough)."""

    class _Bridge(trt.ILogger):
        _levels: ClassVar[dict[Any, int]] = {
            trt.ILogger.INTERNAL_ERROR: logging.CRITICAL,
            trt.ILogger.ERROR: logging.ERROR,
            trt.ILogger.WARNING: logging.WARNING,
            trt.ILogger.INFO: logging.INFO,
            trt.ILogger.VERBOSE: logging.DEBUG,
        }

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.trt_log = logging.getLogger("tensorrt")
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = self._levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            # TensorRT's INFO is chatty: demote it so that -v shows ours and -vv shows theirs
            self.trt_log.log(logging.DEBUG if level == logging.INFO else level, "%s", msg)

    return _Bridge()


@functools.cache
def _logger(trt: Any) -> Any:
    """One TensorRT logger per process (TensorRT keeps a pointer to it for the process lifetime)."""
    return _make_logger(trt)


def _make_profiler(trt: Any) -> Any:
    """An IProfiler that collects every layer's time per call (TensorRT calls it for enqueueV3 too)."""

    class _LayerProfiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.setdefault(str(layer_name), []).append(float(ms))

    return _LayerProfiler()


def _onnx_is_fp16(onnx_path: Path) -> bool:
    """True when the ONNX file's float weights are FP16 (an FP16 export, inputs/outputs FP32)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    kinds = {init.data_type for init in model.graph.initializer}
    return onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds


class _Buffers:
    """Pinned host + device buffers, a stream and four timing events for one loaded engine."""

    def __init__(self, cudart: Any, in_bytes: int, out_bytes: int) -> None:
        self.cudart = cudart
        # cuda-python returns plain ints / opaque handles; typed Any on purpose
        self.in_host: Any = None
        self.out_host: Any = None
        self.in_dev: Any = None
        self.out_dev: Any = None
        self.stream: Any = None
        self.events: list[Any] = []
        try:
            self.in_host = _check(cudart, cudart.cudaMallocHost(in_bytes), "cudaMallocHost(input)")
            self.out_host = _check(cudart, cudart.cudaMallocHost(out_bytes), "cudaMallocHost(output)")
            self.in_dev = _check(cudart, cudart.cudaMalloc(in_bytes), "cudaMalloc(input)")
            self.out_dev = _check(cudart, cudart.cudaMalloc(out_bytes), "cudaMalloc(output)")
            self.stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
            self.events = [_check(cudart, cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(4)]
        except Exception:
            self.free()
            raise

    def free(self) -> None:
        c = self.cudart
        for ev in self.events:
            _check(c, c.cudaEventDestroy(ev), "cudaEventDestroy")
        self.events = []
        if self.stream is not None:
            _check(c, c.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None
        for attr in ("in_dev", "out_dev"):
            if getattr(self, attr) is not None:
                _check(c, c.cudaFree(getattr(self, attr)), "cudaFree")
                setattr(self, attr, None)
        for attr in ("in_host", "out_host"):
            if getattr(self, attr) is not None:
                _check(c, c.cudaFreeHost(getattr(self, attr)), "cudaFreeHost")
                setattr(self, attr, None)


class TensorRTRuntime(Runtime):
    name: ClassVar[str] = "tensorrt"

    def __init__(self, config: TensorRTConfig | None = None) -> None:
        super().__init__()
        self.config = config or TensorRTConfig()
        self._trt = _trt()
        self._cudart = _cudart()
        _check(self._cudart, self._cudart.cudaSetDevice(self.config.device_index), "cudaSetDevice")
        props = _check(
            self._cudart, self._cudart.cudaGetDeviceProperties(self.config.device_index), "cudaGetDeviceProperties"
        )
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        self._gpu_name = name.rstrip("\x00").strip()
        self._cc = (int(props.major), int(props.minor))
        self._runtime: Any = None
        self._engine_obj: Any = None
        self._context: Any = None
        self._buffers: _Buffers | None = None
        self._in_name = self._out_name = ""
        self._out_shape: tuple[int, ...] = ()

    @classmethod
    def probe(cls) -> str | None:
        try:
            _trt()
            cudart = _cudart()
        except RuntimeUnavailableError as e:
            return str(e)
        try:
            count = _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except EngineError as e:
            return f"no usable CUDA device: {e}"
        return None if count and count > 0 else "no CUDA device found"

    def version(self) -> str:
        return str(self._trt.__version__)

    def accelerator(self) -> str:
        return f"{self._gpu_name} (sm_{self._cc[0]}{self._cc[1]})"

    def supported_precisions(self) -> tuple[Precision, ...]:
        return ("int8", "fp16", "fp32")

    def build_options(self) -> dict[str, Any]:
        c = self.config
        return {
            "workspace_mb": c.workspace_mb,
            "max_batch": c.max_batch,
            "opt_batch": c.opt_batch,
            "sparse": self._sparse_enabled(),
            "opt_level": c.builder_optimization_level,
        }

    def gpu_memory_mb(self) -> float | None:
        free, total = _check(self._cudart, self._cudart.cudaMemGetInfo(), "cudaMemGetInfo")
        return float(total - free) / 2**20

    def _sparse_enabled(self) -> bool:
        return self.config.sparse_weights and self._cc >= (8, 0) and hasattr(self._trt.BuilderFlag, "SPARSE_WEIGHTS")

    # -- build ------------------------------------------------------------------------------
    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        trt, logger = self._trt, _logger(self._trt)
        has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")  # removed with weak typing in TensorRT 11
        fp16_onnx = precision == "fp16" and _onnx_is_fp16(onnx_path)
        strongly_typed = fp16_onnx or not has_fp16_flag
        if precision == "fp16" and not fp16_onnx and not has_fp16_flag:
            raise EngineError("this TensorRT builds only strongly typed networks: ship an FP16 ONNX for fp16")
        flags = 0
        if strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errors)[:800]}")
        if network.num_inputs != 1:
            raise EngineError(f"expected one network input, got {network.num_inputs}")
        inp = network.get_input(0)
        dims = tuple(inp.shape)
        if len(dims) != 4:
            raise EngineError(f"model input must be N x C x H x W, got {dims}")
        chw = (int(dims[1]), int(dims[2]), int(dims[3]))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.config.workspace_mb << 20)
        config.builder_optimization_level = self.config.builder_optimization_level
        if not strongly_typed:
            if precision in ("fp16", "int8"):
                config.set_flag(trt.BuilderFlag.FP16)  # let non-quantized layers run in FP16 too
            if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
                config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ; no calibrator is ever set
        if self._sparse_enabled():
            config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        max_batch = self.config.max_batch
        if dims[0] == -1:
            profile = builder.create_optimization_profile()
            opt = min(self.config.opt_batch, max_batch)
            profile.set_shape(inp.name, (1, *chw), (opt, *chw), (max_batch, *chw))
            config.add_optimization_profile(profile)
        else:
            max_batch = int(dims[0])
        cache_path = self.config.timing_cache
        cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            recent = "; ".join(logger.errors[-5:])
            raise EngineError(f"TensorRT failed to build {onnx_path.name} ({precision}): {recent or 'see log'}")
        engine_path = out_dir / "model.plan"
        engine_path.write_bytes(memoryview(plan))
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
            tmp.replace(cache_path)
        info = {"strongly_typed": strongly_typed, "sparse": self._sparse_enabled(), "trt": self.version()}
        (out_dir / "build.json").write_text(json.dumps(info))
        return Engine(
            path=engine_path,
            runtime=self.name,
            precision=precision,
            input_name=str(inp.name),
            input_shape=chw,
            max_batch=max_batch,
            info=info,
        )

    # -- load / infer -----------------------------------------------------------------------
    def _load_impl(self, engine: Engine) -> None:
        trt = self._trt
        self._runtime = trt.Runtime(_logger(trt))
        self._engine_obj = self._runtime.deserialize_cuda_engine(engine.path.read_bytes())
        if self._engine_obj is None:
            raise EngineError(f"TensorRT cannot deserialize {engine.path} (built by another version or GPU?)")
        self._context = self._engine_obj.create_execution_context()
        if self._context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [self._engine_obj.get_tensor_name(i) for i in range(self._engine_obj.num_io_tensors)]
        inputs = [n for n in names if self._engine_obj.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"expected one input and one output tensor, got {inputs} / {outputs}")
        self._in_name, self._out_name = inputs[0], outputs[0]
        for n in (self._in_name, self._out_name):
            if self._engine_obj.get_tensor_dtype(n) != trt.float32:
                raise EngineError(f"tensor {n} is {self._engine_obj.get_tensor_dtype(n)}; edgeloop expects FP32 I/O")
        self._context.set_input_shape(self._in_name, (engine.max_batch, *engine.input_shape))
        out_shape = tuple(self._context.get_tensor_shape(self._out_name))
        per_image_out = int(np.prod(out_shape[1:]))
        per_image_in = int(np.prod(engine.input_shape))
        self._buffers = _Buffers(
            self._cudart, engine.max_batch * per_image_in * 4, engine.max_batch * per_image_out * 4
        )
        self._out_shape = out_shape[1:]
        ok = self._context.set_tensor_address(
            self._in_name, int(self._buffers.in_dev)
        ) and self._context.set_tensor_address(self._out_name, int(self._buffers.out_dev))
        if not ok:
            raise EngineError("TensorRT rejected the tensor addresses")

    def _infer_impl(self, batch: F32) -> tuple[F32, Timing | None]:
        if self._buffers is None or self._context is None:
            raise EngineError("tensorrt: no engine loaded")
        return self._run(self._context, batch)

    def _run(self, context: Any, batch: F32) -> tuple[F32, Timing]:
        if self._buffers is None:
            raise EngineError("tensorrt: no engine loaded")
        c, b = self._cudart, self._buffers
        n = batch.shape[0]
        in_bytes, out_n = batch.nbytes, n * int(np.prod(self._out_shape))
        ctypes.memmove(int(b.in_host), batch.ctypes.data, in_bytes)
        if not context.set_input_shape(self._in_name, batch.shape):
            raise EngineError(f"TensorRT rejected input shape {batch.shape}")
        h2d = c.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = c.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ev = b.events
        _check(c, c.cudaEventRecord(ev[0], b.stream), "cudaEventRecord")
        _check(c, c.cudaMemcpyAsync(b.in_dev, b.in_host, in_bytes, h2d, b.stream), "cudaMemcpyAsync(H2D)")
        _check(c, c.cudaEventRecord(ev[1], b.stream), "cudaEventRecord")
        if not context.execute_async_v3(int(b.stream)):
            raise EngineError("TensorRT execute_async_v3 failed")
        _check(c, c.cudaEventRecord(ev[2], b.stream), "cudaEventRecord")
        _check(c, c.cudaMemcpyAsync(b.out_host, b.out_dev, out_n * 4, d2h, b.stream), "cudaMemcpyAsync(D2H)")
        _check(c, c.cudaEventRecord(ev[3], b.stream), "cudaEventRecord")
        _check(c, c.cudaEventSynchronize(ev[3]), "cudaEventSynchronize")
        ms = [_check(c, c.cudaEventElapsedTime(ev[i], ev[i + 1]), "cudaEventElapsedTime") for i in range(3)]
        out = np.ctypeslib.as_array((ctypes.c_float * out_n).from_address(int(b.out_host)))
        logits = out.reshape(n, *self._out_shape).copy()
        return logits, Timing(
            total_ms=float(sum(ms)), h2d_ms=float(ms[0]), compute_ms=float(ms[1]), d2h_ms=float(ms[2])
        )

    def _profile_impl(self, batch: F32, runs: int) -> list[LayerTime]:
        """Layer times from an IProfiler on a second execution context (the serving one stays unprofiled)."""
        if self._engine_obj is None or self._buffers is None:
            raise EngineError("tensorrt: no engine loaded")
        context = self._engine_obj.create_execution_context()
        if context is None:
            raise EngineError("TensorRT could not create a profiling context (out of GPU memory?)")
        profiler = _make_profiler(self._trt)
        try:
            context.profiler = profiler
            ok = context.set_tensor_address(self._in_name, int(self._buffers.in_dev)) and context.set_tensor_address(
                self._out_name, int(self._buffers.out_dev)
            )
            if not ok:
                raise EngineError("TensorRT rejected the tensor addresses")
            for _ in range(runs + 1):  # the first call warms up and is dropped below
                self._run(context, batch)
        finally:
            del context  # frees its activation memory before anything else runs
        return [LayerTime(name, "trt-layer", mean_after_warmup(times)) for name, times in profiler.times.items()]

    def _unload_impl(self) -> None:
        if self._buffers is not None:
            self._buffers.free()
            self._buffers = None
        # TensorRT objects free GPU memory when released, context before engine before runtime
        self._context = None
        self._engine_obj = None
        self._runtime = None
