"""TensorRT backend: the ``Runtime`` over a serialized engine (TensorRT 10 API).

* Building is the loader's job (``loader.engine_from_onnx``); this runner decides whether 2:4 sparse
  weights are on (asked for, and the GPU has sparse Tensor Cores: compute capability >= 8.0).
* Buffers, streams and events through cuda-python's runtime API; every CUDA status is checked.
  Host-to-device copy, compute and device-to-host copy are timed separately with CUDA events.

TensorRT and cuda-python are imported lazily, so this module imports on any machine.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from device.runtimes import registry
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
from device.runtimes.tensorrt.config import TensorRTConfig
from device.runtimes.tensorrt.loader import engine_from_onnx
from device.runtimes.tensorrt.util import Buffers, check, load_cudart, load_tensorrt, logger_for, make_profiler


@registry.register
class TensorRTRuntime(Runtime):
    name: ClassVar[str] = "tensorrt"
    config_class: ClassVar[type[TensorRTConfig]] = TensorRTConfig
    priority: ClassVar[int] = 100  # the first choice of ``auto`` wherever it can run
    config: TensorRTConfig

    def __init__(self, config: TensorRTConfig | None = None) -> None:
        super().__init__(config or TensorRTConfig())
        self._trt = load_tensorrt()
        self._cudart = load_cudart()
        check(self._cudart, self._cudart.cudaSetDevice(self.config.device_index), "cudaSetDevice")
        props = check(
            self._cudart, self._cudart.cudaGetDeviceProperties(self.config.device_index), "cudaGetDeviceProperties"
        )
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        self._gpu_name = name.rstrip("\x00").strip()
        self._cc = (int(props.major), int(props.minor))
        self._runtime: Any = None
        self._engine_obj: Any = None
        self._context: Any = None
        self._buffers: Buffers | None = None
        self._in_name = self._out_name = ""
        self._out_shape: tuple[int, ...] = ()

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
        free, total = check(self._cudart, self._cudart.cudaMemGetInfo(), "cudaMemGetInfo")
        return float(total - free) / 2**20

    def _sparse_enabled(self) -> bool:
        return self.config.sparse_weights and self._cc >= (8, 0) and hasattr(self._trt.BuilderFlag, "SPARSE_WEIGHTS")

    # -- build ------------------------------------------------------------------------------
    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        return engine_from_onnx(
            self._trt,
            self.config,
            onnx_path,
            precision,
            out_dir,
            sparse=self._sparse_enabled(),
            runtime=self.name,
            version=self.version(),
        )

    # -- load / infer -----------------------------------------------------------------------
    def _load_impl(self, engine: Engine) -> None:
        trt = self._trt
        self._runtime = trt.Runtime(logger_for(trt))
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
        self._buffers = Buffers(self._cudart, engine.max_batch * per_image_in * 4, engine.max_batch * per_image_out * 4)
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
        check(c, c.cudaEventRecord(ev[0], b.stream), "cudaEventRecord")
        check(c, c.cudaMemcpyAsync(b.in_dev, b.in_host, in_bytes, h2d, b.stream), "cudaMemcpyAsync(H2D)")
        check(c, c.cudaEventRecord(ev[1], b.stream), "cudaEventRecord")
        if not context.execute_async_v3(int(b.stream)):
            raise EngineError("TensorRT execute_async_v3 failed")
        check(c, c.cudaEventRecord(ev[2], b.stream), "cudaEventRecord")
        check(c, c.cudaMemcpyAsync(b.out_host, b.out_dev, out_n * 4, d2h, b.stream), "cudaMemcpyAsync(D2H)")
        check(c, c.cudaEventRecord(ev[3], b.stream), "cudaEventRecord")
        check(c, c.cudaEventSynchronize(ev[3]), "cudaEventSynchronize")
        ms = [check(c, c.cudaEventElapsedTime(ev[i], ev[i + 1]), "cudaEventElapsedTime") for i in range(3)]
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
        profiler = make_profiler(self._trt)
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
