"""Helpers of the TensorRT backend: lazy imports, CUDA status checks, the logger bridge, the layer
profiler and the pinned/device buffers of a loaded engine.

TensorRT and cuda-python are imported lazily, so this module imports on any machine.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

from device.runtimes.base import EngineError, RuntimeUnavailableError

INSTALL_HINT = (
    "on a Jetson, TensorRT comes with JetPack (apt install python3-libnvinfer; make the venv with "
    "--system-site-packages); on x86 `pip install 'edgeloop[jetson]'`. cuda-python is needed for buffers."
)


# --- lazy imports ------------------------------------------------------------------------------


def load_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeUnavailableError(f"the tensorrt backend needs TensorRT: {INSTALL_HINT}") from e
    return tensorrt


def load_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise RuntimeUnavailableError(f"the tensorrt backend needs cuda-python: {INSTALL_HINT}") from e
    return cudart


def check(cudart: Any, result: Any, what: str) -> Any:
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
def logger_for(trt: Any) -> Any:
    """One TensorRT logger per process (TensorRT keeps a pointer to it for the process lifetime)."""
    return _make_logger(trt)


def make_profiler(trt: Any) -> Any:
    """An IProfiler that collects every layer's time per call (TensorRT calls it for enqueueV3 too)."""

    class _LayerProfiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.setdefault(str(layer_name), []).append(float(ms))

    return _LayerProfiler()


class Buffers:
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
        c = self.cudart
        for ev in self.events:
            check(c, c.cudaEventDestroy(ev), "cudaEventDestroy")
        self.events = []
        if self.stream is not None:
            check(c, c.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None
        for attr in ("in_dev", "out_dev"):
            if getattr(self, attr) is not None:
                check(c, c.cudaFree(getattr(self, attr)), "cudaFree")
                setattr(self, attr, None)
        for attr in ("in_host", "out_host"):
            if getattr(self, attr) is not None:
                check(c, c.cudaFreeHost(getattr(self, attr)), "cudaFreeHost")
                setattr(self, attr, None)
