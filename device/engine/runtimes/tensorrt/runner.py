"""TensorRT backend: the ``Runtime`` over a serialized engine (TensorRT 10 API; ready for 11).

* Building is the loader's job (``loader.engine_from_onnx``); this runner decides what the GPU can
  run: the precisions it runs fast (TensorRT 10 asks the builder, 11 reads the compute capability),
  2:4 sparse weights (asked for, and sparse Tensor Cores: compute capability >= 8.0), and where the
  timing cache persists (``cache_dir``, one file per TensorRT version and GPU).
* One execution context serves every batch: it switches to the optimisation profile whose range
  holds the batch. A fixed-batch engine takes exactly its batch, refused clearly before TensorRT.
* DLA (``dla_core``): the runtime's DLA core is set before a DLA engine is deserialized (else TensorRT
  loads it on core 0), and a batch runs padded up to its one-batch profile (DLA has no dynamic shapes).
  ``dla_cores`` tells the selection how many cores the board has (``tensorrt:dla0`` / ``dla1``).
* Buffers, streams and events through cuda-python's runtime API; every CUDA status is checked, and
  the GPU is made current on every thread that calls (``cudaSetDevice`` is per thread).
  Host-to-device copy, compute and device-to-host copy are timed separately with CUDA events.

TensorRT and cuda-python are imported lazily, so this module imports on any machine.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from device.engine.jetson import release as jetson
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
    dla_target,
    mean_after_warmup,
)
from device.engine.runtimes.tensorrt.config import TensorRTConfig
from device.engine.runtimes.tensorrt.loader import engine_from_onnx
from device.engine.runtimes.tensorrt.util import (
    INSTALL_HINT,
    Buffers,
    Cudart,
    CudaValue,
    CurrentDevice,
    TrtBuilder,
    TrtContext,
    TrtEngine,
    TrtModule,
    TrtObject,
    check,
    engine_activation_bytes,
    fast_int8_fp16,
    load_cudart,
    load_tensorrt,
    logger_for,
    make_profiler,
)


@dataclass
class _Context:
    """An execution context and the optimisation profile it is switched to."""

    trt_context: TrtContext
    profile: int = 0
    bound: bool = False  # tensor addresses set for the current profile


@dataclass
class _Loaded:
    """What ``load`` acquires for one engine; released by ``_unload_impl``, context before engine before runtime."""

    trt_runtime: TrtObject
    trt_engine: TrtEngine
    serving: _Context
    in_name: str
    out_name: str
    profiles: list[tuple[int, int]]  # (min, max) batch of each optimisation profile, by index
    fixed_batch: int | None
    out_shape: tuple[int, ...] = ()  # per image
    plan_bytes: int = 0
    buffers: Buffers | None = field(default=None)


@registry.register
class TensorRTRuntime(Runtime):
    name: ClassVar[str] = "tensorrt"
    config_class: ClassVar[type[TensorRTConfig]] = TensorRTConfig
    priority: ClassVar[int] = 100  # the first choice of ``auto`` wherever it can run
    install_hint: ClassVar[str] = INSTALL_HINT
    config: TensorRTConfig

    def __init__(self, config: TensorRTConfig | None = None) -> None:
        super().__init__(config or TensorRTConfig())
        self._trt: TrtModule = load_tensorrt()
        self._cudart: Cudart = load_cudart()
        self._device = CurrentDevice(self._cudart, self.config.device_index)
        self._device.ensure()
        props: CudaValue = check(
            self._cudart, self._cudart.cudaGetDeviceProperties(self.config.device_index), "cudaGetDeviceProperties"
        )
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        self._gpu_name = name.rstrip("\x00").strip()
        self._cc = (int(props.major), int(props.minor))
        self._precisions: tuple[Precision, ...] | None = None
        self._dla_cores: int | None = None
        self._loaded: _Loaded | None = None

    @classmethod
    def probe(cls) -> str | None:
        try:
            load_tensorrt()
            cudart = load_cudart()
        except RuntimeUnavailableError as e:
            return str(e)
        try:
            count = check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except EngineError as e:
            return f"no usable CUDA device: {e}"
        return None if count and count > 0 else "no CUDA device found"

    @classmethod
    def expected_here(cls) -> str | None:
        return "this Jetson" if jetson.is_jetson() else None

    def version(self) -> str:
        return str(self._trt.__version__)

    def accelerator(self) -> str:
        gpu = f"{self._gpu_name} (sm_{self._cc[0]}{self._cc[1]})"
        return gpu if self.config.dla_core is None else f"{gpu}, DLA core {self.config.dla_core}"

    def target(self) -> str:
        return dla_target(self.name, self.config.dla_core)

    def supported_precisions(self) -> tuple[Precision, ...]:
        """INT8 and FP16 where this GPU runs them fast (best first); FP32 always. DLA: INT8 and FP16 only."""
        if self.config.dla_core is not None:
            return ("int8", "fp16")
        if self._precisions is None:
            self._device.ensure()
            builder: TrtBuilder = self._trt.Builder(logger_for(self._trt))
            int8, fp16 = fast_int8_fp16(builder, self._cc)
            self._precisions = (*(("int8",) if int8 else ()), *(("fp16",) if fp16 else ()), "fp32")
        return self._precisions

    def dla_cores(self) -> int:
        """The board's DLA cores, as TensorRT counts them: two on Jetson AGX Orin and AGX Xavier, none on Orin Nano."""
        if self._dla_cores is None:
            self._device.ensure()
            builder: TrtBuilder = self._trt.Builder(logger_for(self._trt))
            self._dla_cores = int(builder.num_DLA_cores)
        return self._dla_cores

    def build_options(self) -> dict[str, Any]:
        c = self.config
        return {
            "workspace_mb": c.workspace_mb,
            "max_batch": c.max_batch,
            "profiles": c.profile_batches(),
            "sparse": self._sparse_enabled(),
            "tf32": c.allow_tf32,
            "opt_level": c.builder_optimization_level,
            "dla": None if c.dla_core is None else {"core": c.dla_core, "gpu_fallback": c.gpu_fallback},
        }

    def timing_cache_path(self) -> Path | None:
        """The explicit ``timing_cache``, else one file per TensorRT version and GPU in ``cache_dir``."""
        if self.config.timing_cache is not None:
            return self.config.timing_cache
        if self.config.cache_dir is None:
            return None
        gpu = re.sub(r"[^A-Za-z0-9.-]+", "-", self._gpu_name).strip("-") or "gpu"
        return self.config.cache_dir / f"timing-trt{self.version()}-{gpu}-sm{self._cc[0]}{self._cc[1]}.cache"

    def gpu_memory_mb(self) -> float | None:
        """The loaded engine's own device memory: its context's activations, the I/O buffers and the plan
        (weights and kernels). Not the machine's: on a Jetson that would be all the RAM in use."""
        loaded = self._loaded
        if loaded is None:
            return None
        buffers = loaded.buffers.nbytes if loaded.buffers is not None else 0
        return float(engine_activation_bytes(loaded.trt_engine) + buffers + loaded.plan_bytes) / 2**20

    def _sparse_enabled(self) -> bool:
        return self.config.sparse_weights and self._cc >= (8, 0) and hasattr(self._trt.BuilderFlag, "SPARSE_WEIGHTS")

    # -- build ------------------------------------------------------------------------------
    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        self._device.ensure()
        return engine_from_onnx(
            self._trt,
            self.config,
            onnx_path,
            precision,
            out_dir,
            sparse=self._sparse_enabled(),
            runtime=self.name,
            version=self.version(),
            timing_cache=self.timing_cache_path(),
        )

    # -- load / infer -----------------------------------------------------------------------
    def _load_impl(self, engine: Engine) -> None:
        self._device.ensure()
        self._loaded = self._deserialize(engine)
        try:
            self._bind(self._loaded, engine)
        except BaseException:
            self._unload_impl()  # the base class unloads only what loaded completely
            raise

    def _bind(self, loaded: _Loaded, engine: Engine) -> None:
        """Size the I/O buffers for the largest batch (the last profile) and read the output shape."""
        per_image_in = int(np.prod(engine.input_shape))
        top = max(hi for _, hi in loaded.profiles)
        ctx = loaded.serving
        self._switch(ctx, len(loaded.profiles) - 1 if loaded.fixed_batch is None else 0, stream=0)
        if not ctx.trt_context.set_input_shape(loaded.in_name, (top, *engine.input_shape)):
            raise EngineError(f"TensorRT rejected the input shape {(top, *engine.input_shape)}")
        loaded.out_shape = tuple(int(d) for d in ctx.trt_context.get_tensor_shape(loaded.out_name))[1:]
        per_image_out = int(np.prod(loaded.out_shape))
        loaded.buffers = Buffers(self._cudart, top * per_image_in * 4, top * per_image_out * 4)

    def _trt_runtime(self, engine: Engine) -> TrtObject:
        """A TensorRT runtime for ``engine``: on a DLA engine's core (this runtime's own, else the one it was
        built for), set before deserializing, else TensorRT loads it on core 0."""
        runtime: TrtObject = self._trt.Runtime(logger_for(self._trt))
        built = engine.info.get("dla_core")
        if built is None:
            return runtime
        core = self.config.dla_core if self.config.dla_core is not None else int(built)
        cores = int(runtime.num_DLA_cores)
        if not 0 <= core < cores:
            raise EngineError(f"{engine.path.name} runs on DLA core {core}, and this device has {cores} DLA cores")
        runtime.DLA_core = core
        return runtime

    def _deserialize(self, engine: Engine) -> _Loaded:
        trt = self._trt
        plan = engine.path.read_bytes()
        runtime: TrtObject = self._trt_runtime(engine)
        engine_obj: TrtEngine = runtime.deserialize_cuda_engine(plan)
        if engine_obj is None:
            raise EngineError(f"TensorRT cannot deserialize {engine.path} (built by another version or GPU?)")
        names = [engine_obj.get_tensor_name(i) for i in range(engine_obj.num_io_tensors)]
        inputs = [n for n in names if engine_obj.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"expected one input and one output tensor, got {inputs} / {outputs}")
        for n in (*inputs, *outputs):
            if engine_obj.get_tensor_dtype(n) != trt.float32:
                raise EngineError(f"tensor {n} is {engine_obj.get_tensor_dtype(n)}; edgeloop expects FP32 I/O")
        batch = int(engine_obj.get_tensor_shape(inputs[0])[0])
        fixed = batch if batch > 0 else None
        if fixed is not None:
            profiles = [(fixed, fixed)]
        else:
            shapes = [
                engine_obj.get_tensor_profile_shape(inputs[0], k) for k in range(engine_obj.num_optimization_profiles)
            ]
            profiles = [(int(lo[0]), int(hi[0])) for lo, _, hi in shapes]
        context: TrtContext = engine_obj.create_execution_context()
        if context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        return _Loaded(runtime, engine_obj, _Context(context), inputs[0], outputs[0], profiles, fixed, (), len(plan))

    def _profile_for(self, loaded: _Loaded, n: int) -> tuple[int, int]:
        """The optimisation profile for a batch of ``n``, and the batch it runs: ``n``, or a one-batch
        profile's batch (DLA), which a smaller batch is padded up to."""
        if loaded.fixed_batch is not None and n != loaded.fixed_batch:
            raise EngineError(
                f"this engine has a fixed batch of {loaded.fixed_batch} (its ONNX input is {loaded.fixed_batch} x C x "
                f"H x W): send batches of exactly {loaded.fixed_batch}, or export the ONNX with a dynamic batch"
            )
        for k, (lo, hi) in enumerate(loaded.profiles):
            if n <= hi and (lo <= n or lo == hi):
                return k, max(n, lo)
        raise EngineError(f"batch {n} is in none of the engine's profiles {loaded.profiles}")

    def _switch(self, ctx: _Context, profile: int, stream: CudaValue) -> None:
        """Switch ``ctx`` to ``profile`` (when it is another) and bind the I/O buffers for it."""
        loaded = self._loaded
        if loaded is None:
            raise EngineError("tensorrt: no engine loaded")
        if profile != ctx.profile:
            if not ctx.trt_context.set_optimization_profile_async(profile, int(stream)):
                raise EngineError(f"TensorRT could not switch to optimisation profile {profile}")
            ctx.profile, ctx.bound = profile, False
        if not ctx.bound and loaded.buffers is not None:
            b = loaded.buffers
            ok = ctx.trt_context.set_tensor_address(loaded.in_name, int(b.in_dev))
            if not (ok and ctx.trt_context.set_tensor_address(loaded.out_name, int(b.out_dev))):
                raise EngineError("TensorRT rejected the tensor addresses")
            ctx.bound = True

    def _infer_impl(self, batch: F32) -> tuple[F32, Timing | None]:
        if self._loaded is None:
            raise EngineError("tensorrt: no engine loaded")
        self._device.ensure()
        return self._run(self._loaded.serving, batch)

    def _run(self, ctx: _Context, batch: F32) -> tuple[F32, Timing]:
        loaded = self._loaded
        if loaded is None or loaded.buffers is None:
            raise EngineError("tensorrt: no engine loaded")
        c, b = self._cudart, loaded.buffers
        n = batch.shape[0]
        profile, padded = self._profile_for(loaded, n)
        self._switch(ctx, profile, b.stream)
        out_n = n * int(np.prod(loaded.out_shape))
        ctypes.memmove(int(b.in_host), batch.ctypes.data, batch.nbytes)
        in_bytes = batch.nbytes // n * padded
        if padded > n:  # padded with zeros up to the profile's batch (DLA); their outputs are not copied back
            ctypes.memset(int(b.in_host) + batch.nbytes, 0, in_bytes - batch.nbytes)
        if not ctx.trt_context.set_input_shape(loaded.in_name, (padded, *batch.shape[1:])):
            raise EngineError(f"TensorRT rejected input shape {(padded, *batch.shape[1:])}")
        h2d = c.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = c.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ev = b.events
        check(c, c.cudaEventRecord(ev[0], b.stream), "cudaEventRecord")
        check(c, c.cudaMemcpyAsync(b.in_dev, b.in_host, in_bytes, h2d, b.stream), "cudaMemcpyAsync(H2D)")
        check(c, c.cudaEventRecord(ev[1], b.stream), "cudaEventRecord")
        if not ctx.trt_context.execute_async_v3(int(b.stream)):
            raise EngineError("TensorRT execute_async_v3 failed")
        check(c, c.cudaEventRecord(ev[2], b.stream), "cudaEventRecord")
        check(c, c.cudaMemcpyAsync(b.out_host, b.out_dev, out_n * 4, d2h, b.stream), "cudaMemcpyAsync(D2H)")
        check(c, c.cudaEventRecord(ev[3], b.stream), "cudaEventRecord")
        check(c, c.cudaEventSynchronize(ev[3]), "cudaEventSynchronize")
        ms = [check(c, c.cudaEventElapsedTime(ev[i], ev[i + 1]), "cudaEventElapsedTime") for i in range(3)]
        out = np.ctypeslib.as_array((ctypes.c_float * out_n).from_address(int(b.out_host)))
        logits = out.reshape(n, *loaded.out_shape).copy()
        return logits, Timing(
            total_ms=float(sum(ms)), h2d_ms=float(ms[0]), compute_ms=float(ms[1]), d2h_ms=float(ms[2])
        )

    def _profile_impl(self, batch: F32, runs: int) -> list[LayerTime]:
        """Layer times from an IProfiler on a second execution context (the serving one stays unprofiled)."""
        loaded = self._loaded
        if loaded is None:
            raise EngineError("tensorrt: no engine loaded")
        self._device.ensure()
        context: TrtContext = loaded.trt_engine.create_execution_context()
        if context is None:
            raise EngineError("TensorRT could not create a profiling context (out of GPU memory?)")
        profiler = make_profiler(self._trt)
        ctx = _Context(context)
        del context
        try:
            ctx.trt_context.profiler = profiler
            for _ in range(runs + 1):  # the first call warms up and is dropped below
                self._run(ctx, batch)
        finally:
            ctx.trt_context = None  # frees its activation memory before anything else runs
        return [LayerTime(name, "trt-layer", mean_after_warmup(times)) for name, times in profiler.times.items()]

    def _unload_impl(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        self._device.ensure()
        try:
            if loaded.buffers is not None:
                loaded.buffers.free()
        finally:
            # TensorRT objects free GPU memory when released, context before engine before runtime
            loaded.serving.trt_context = None
            loaded.trt_engine = None
            loaded.trt_runtime = None

    def _close_impl(self) -> None:
        self._unload_impl()
