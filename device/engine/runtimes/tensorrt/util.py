"""Helpers of the TensorRT backend: lazy imports, the TensorRT names that differ between versions,
CUDA status checks and the current device, the logger bridge, the layer profiler and the
pinned/device buffers of a loaded engine.

TensorRT and cuda-python are imported lazily, so this module imports on any machine.

**Version paths.** TensorRT 10 and 11 differ in a few names: 11 builds only strongly typed networks
(no ``BuilderFlag.FP16`` / ``INT8``), and it dropped ``platform_has_fast_int8`` / ``_fp16`` and
``ICudaEngine.device_memory_size``. Where a name is not in every supported version, the code asks the
loaded module, ``hasattr(obj, "NAME")``, and uses ``NAME`` only inside that branch (or after an early
return on its absence), in the same function. The API conformance test
(``tests/device/engine/runtimes/test_tensorrt_api.py``) reads exactly these branches as the version paths:
for each version's bindings it follows the branches whose guards hold there and checks every
TensorRT name used on them. A name used outside any guard (such as the DLA names of ``use_dla``,
which 10.3, 10.13 and 11.4 all have) is on every version's path, so the test checks it in every version.

**Typed names.** Everything TensorRT hands back is typed with one of the ``Trt*`` aliases below (also
class fields, which are named ``trt_*``), our subclasses of its logger and profiler with ``Bridge``, and
everything cuda-python hands back with ``Cudart`` / ``CudaValue``. They are ``Any`` to mypy (the
bindings ship no stubs); to the conformance test they say which attribute accesses are TensorRT's.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, ClassVar, TypeAlias

from device.engine.runtimes.base import EngineError, Precision, RuntimeUnavailableError

INSTALL_HINT = (
    "on a Jetson, TensorRT comes with JetPack (apt install python3-libnvinfer; make the venv with "
    "--system-site-packages, then pip install 'edgeloop[jetson]' (JetPack 6) or 'edgeloop[jetson7]' (JetPack 7) "
    "for cuda-python); on an x86 GPU server `pip install 'edgeloop[gpu-server]'`. See docs/jetson.md."
)

TrtModule: TypeAlias = Any  # the tensorrt module
TrtBuilder: TypeAlias = Any  # trt.Builder
TrtBuilderConfig: TypeAlias = Any  # trt.IBuilderConfig
TrtNetwork: TypeAlias = Any  # trt.INetworkDefinition
TrtEngine: TypeAlias = Any  # trt.ICudaEngine
TrtContext: TypeAlias = Any  # trt.IExecutionContext
TrtObject: TypeAlias = Any  # any other TensorRT object: parser, tensor, profile, timing cache, runtime, enum value
Bridge: TypeAlias = Any  # our subclasses of trt.ILogger / trt.IProfiler: their extra attributes are ours
Cudart: TypeAlias = Any  # cuda-python's runtime module (cuda.bindings.runtime)
CudaValue: TypeAlias = Any  # what it returns: pointers, streams, events, device properties


# --- lazy imports ------------------------------------------------------------------------------


def load_tensorrt() -> TrtModule:
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeUnavailableError(f"the tensorrt backend needs TensorRT: {INSTALL_HINT}") from e
    return tensorrt


def load_cudart() -> Cudart:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise RuntimeUnavailableError(f"the tensorrt backend needs cuda-python: {INSTALL_HINT}") from e
    return cudart


# --- names that differ between TensorRT versions (see the module docstring) -----------------


def has_weak_typing(trt: TrtModule) -> bool:
    """TensorRT 10 builds weakly typed networks with precision flags; 11 builds only strongly typed ones."""
    return hasattr(trt.BuilderFlag, "FP16")


def set_weak_precision_flags(trt: TrtModule, bc: TrtBuilderConfig, precision: Precision) -> None:
    """TensorRT 10's precision flags for a weakly typed network; explicit Q/DQ, never a calibrator."""
    if precision in ("fp16", "int8") and hasattr(trt.BuilderFlag, "FP16"):
        bc.set_flag(trt.BuilderFlag.FP16)  # let the layers left unquantized run in FP16 too
    if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
        bc.set_flag(trt.BuilderFlag.INT8)


def use_tf32(trt: TrtModule, bc: TrtBuilderConfig, allowed: bool) -> bool:
    """Clear TensorRT's default TF32 flag unless allowed; return whether FP32 layers may run as TF32."""
    if not hasattr(trt.BuilderFlag, "TF32"):
        return False
    if not allowed:
        bc.clear_flag(trt.BuilderFlag.TF32)
    return bool(bc.get_flag(trt.BuilderFlag.TF32))


def fast_int8_fp16(builder: TrtBuilder, cc: tuple[int, int]) -> tuple[bool, bool]:
    """Whether the GPU has fast INT8 and fast FP16: TensorRT 10 asks it, 11 dropped the query."""
    if hasattr(builder, "platform_has_fast_int8") and hasattr(builder, "platform_has_fast_fp16"):
        return bool(builder.platform_has_fast_int8), bool(builder.platform_has_fast_fp16)
    return fast_by_compute_capability(cc)


def fast_by_compute_capability(cc: tuple[int, int]) -> tuple[bool, bool]:
    """(fast INT8, fast FP16) by compute capability, as TensorRT's support matrix lists them.

    INT8 needs dp4a (sm_61) or Tensor Cores (sm_70+; sm_72 Xavier, sm_87 Orin); sm_53 (Nano),
    sm_60 and sm_62 (TX2) have none. FP16 is fast on sm_53, sm_60, sm_62 and sm_70+, slow on sm_61.
    """
    int8 = cc == (6, 1) or cc >= (7, 0)
    fp16 = cc in ((5, 3), (6, 0), (6, 2)) or cc >= (7, 0)
    return int8, fp16


def use_dla(trt: TrtModule, builder: TrtBuilder, bc: TrtBuilderConfig, core: int, gpu_fallback: bool) -> None:
    """Put the network on DLA core ``core``, with the layers DLA cannot run on the GPU when ``gpu_fallback``.

    The precision is the caller's: DLA runs FP16 and INT8 only (TensorRT 10 from its precision flags,
    11 from the network's own types)."""
    cores = int(builder.num_DLA_cores)
    if not 0 <= core < cores:
        have = f"DLA cores 0-{cores - 1}" if cores > 1 else ("DLA core 0" if cores == 1 else "no DLA")
        raise EngineError(
            f"DLA core {core} does not exist: this device has {have} (Jetson AGX Orin and Xavier have two, Orin NX "
            "8GB one, Orin Nano and Nano none); set [runtime] dla_core to one it has, or leave it unset for the GPU"
        )
    bc.default_device_type = trt.DeviceType.DLA
    bc.DLA_core = core
    if gpu_fallback:
        bc.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def engine_activation_bytes(engine: TrtEngine) -> int:
    """Device memory an execution context of ``engine`` allocates (the largest profile's activations)."""
    if hasattr(engine, "device_memory_size_v2"):  # TensorRT >= 10.1 and 11
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)  # TensorRT 10.0


# --- CUDA --------------------------------------------------------------------------------------


def check(cudart: Cudart, result: CudaValue, what: str) -> CudaValue:
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


class CurrentDevice:
    """``cudaSetDevice`` is per host thread: make the runtime's GPU current on each thread that uses it."""

    def __init__(self, cudart: Cudart, index: int) -> None:
        self.cudart, self.index = cudart, index
        self._local = threading.local()

    def ensure(self) -> None:
        if not getattr(self._local, "current", False):
            check(self.cudart, self.cudart.cudaSetDevice(self.index), "cudaSetDevice")
            self._local.current = True


# --- logging and profiling ---------------------------------------------------------------------


def _make_logger(trt: TrtModule) -> Bridge:
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

        def log(self, severity: TrtObject, msg: str) -> None:
            level = self._levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            # TensorRT's INFO is chatty: demote it so that -v shows ours and -vv shows theirs
            self.trt_log.log(logging.DEBUG if level == logging.INFO else level, "%s", msg)

    return _Bridge()


@functools.cache
def logger_for(trt: TrtModule) -> Bridge:
    """One TensorRT logger per process (TensorRT keeps a pointer to it for the process lifetime)."""
    return _make_logger(trt)


def make_profiler(trt: TrtModule) -> Bridge:
    """An IProfiler that collects every layer's time per call (TensorRT calls it for enqueueV3 too)."""

    class _LayerProfiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.setdefault(str(layer_name), []).append(float(ms))

    return _LayerProfiler()


# --- buffers -----------------------------------------------------------------------------------


class Buffers:
    """Pinned host + device buffers, a stream and four timing events for one loaded engine."""

    def __init__(self, cudart: Cudart, in_bytes: int, out_bytes: int) -> None:
        self.cudart = cudart
        self.nbytes = in_bytes + out_bytes  # device memory of the I/O buffers
        self.in_host: CudaValue = None
        self.out_host: CudaValue = None
        self.in_dev: CudaValue = None
        self.out_dev: CudaValue = None
        self.stream: CudaValue = None
        self.events: list[CudaValue] = []
        try:
            self.in_host = check(cudart, cudart.cudaMallocHost(in_bytes), "cudaMallocHost(input)")
            self.out_host = check(cudart, cudart.cudaMallocHost(out_bytes), "cudaMallocHost(output)")
            self.in_dev = check(cudart, cudart.cudaMalloc(in_bytes), "cudaMalloc(input)")
            self.out_dev = check(cudart, cudart.cudaMalloc(out_bytes), "cudaMalloc(output)")
            self.stream = check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
            self.events = [check(cudart, cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(4)]
        except Exception:
            self.free()
            raise

    def free(self) -> None:
        """Release everything, also past a failed release (the first failure is raised at the end)."""
        c = self.cudart
        steps = [(c.cudaEventDestroy, ev, "cudaEventDestroy") for ev in self.events]
        steps.append((c.cudaStreamDestroy, self.stream, "cudaStreamDestroy"))
        steps += [(c.cudaFree, self.in_dev, "cudaFree(input)"), (c.cudaFree, self.out_dev, "cudaFree(output)")]
        steps += [(c.cudaFreeHost, self.in_host, "cudaFreeHost(input)")]
        steps += [(c.cudaFreeHost, self.out_host, "cudaFreeHost(output)")]
        self.events, self.stream = [], None
        self.in_dev = self.out_dev = self.in_host = self.out_host = None
        errors: list[EngineError] = []
        for release, handle, what in steps:
            if handle is None:
                continue
            try:
                check(c, release(handle), what)
            except EngineError as e:
                errors.append(e)
        if errors:
            more = f" (and {len(errors) - 1} more: {'; '.join(map(str, errors[1:]))})" if len(errors) > 1 else ""
            raise EngineError(f"{errors[0]}{more}") from errors[0]
