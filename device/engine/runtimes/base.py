"""The one extension point for inference backends: ``Runtime``, and the base of their config models.

Every backend is one folder, ``device/engine/runtimes/<backend>/``, with the same files: ``config.py``
(its ``RuntimeConfig`` subclass), ``loader.py`` (ONNX -> engine), ``runner.py`` (its ``Runtime``
subclass, registered with ``@registry.register``) and ``util.py`` (lazy imports and helpers).

Runtimes are modelled on Polygraphy's runners: public methods check state, validate inputs and time the call;
subclasses implement the ``_*_impl`` methods. A runtime is a context manager, and device memory is
released in ``close()`` / ``__exit__``, never in ``__del__``.

Life cycle::

    with OnnxRuntimeRuntime(config) as rt:
        engine = rt.build(onnx_path, precision, out_dir)   # once per (model, precision, device)
        rt.load(engine)
        logits = rt.infer(batch)                          # float32 NCHW -> float32 logits
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import EdgeloopError
from shared.protocol import Precision

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

__all__ = [
    "F32",
    "Engine",
    "EngineError",
    "LayerTime",
    "Precision",  # defined once, in shared.protocol; re-exported for the backends' signatures
    "Runtime",
    "RuntimeConfig",
    "RuntimeUnavailableError",
    "Timing",
    "dla_target",
    "legacy_threads",
    "mean_after_warmup",
    "parse_target",
]


class RuntimeConfig(BaseModel):
    """Base of every ``[runtime]`` table: ``type`` names the backend (or ``auto``); unknown fields are refused.

    Subclasses narrow ``type`` to ``Literal["<name>"]`` and give every field a default and a description.
    ``threads`` is common to every backend; each maps it to its own knob (ONNX Runtime's intra-op threads,
    OpenVINO's ``INFERENCE_NUM_THREADS``) or ignores it (TensorRT: the GPU runs the model).
    """

    model_config = ConfigDict(extra="forbid")

    type: str
    threads: int | None = Field(
        None, ge=0, description="CPU threads per inference call; unset (or 0): the backend's default (one per core)"
    )

    @field_validator("threads")
    @classmethod
    def _zero_is_default(cls, v: int | None) -> int | None:
        return v or None  # 0 was each backend's "one per core": the same as unset


def legacy_threads(data: object, old: str, table: str) -> object:
    """Read a backend's former thread field (``intra_op_threads``, ``inference_num_threads``) as ``threads``."""
    if isinstance(data, dict) and old in data:
        data = dict(data)
        value = data.pop(old)
        if "threads" in data and data["threads"] != value:
            raise ValueError(f"[{table}] sets both threads and {old}: keep threads")
        data["threads"] = value
    return data


class RuntimeUnavailableError(EdgeloopError):
    """The backend's libraries or hardware are missing; the message says how to install them."""


class EngineError(EdgeloopError):
    """An engine could not be built or loaded (bad model, unsupported op, out of memory...)."""


@dataclass(frozen=True)
class Engine:
    """A built engine on disk plus what it was built from."""

    path: Path
    runtime: str
    precision: Precision
    input_name: str
    input_shape: tuple[int, int, int]  # C, H, W
    max_batch: int
    build_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerTime:
    """Mean time of one layer (node) per inference call, as the backend's profiler reports it."""

    name: str
    op: str
    ms: float
    output_shape: tuple[int, ...] | None = None


def dla_target(runtime: str, core: int | None) -> str:
    """What the selection and the reports call a runtime on one DLA core (``tensorrt:dla0``); the plain
    name on its GPU or CPU."""
    return runtime if core is None else f"{runtime}:dla{core}"


def parse_target(target: str) -> tuple[str, int | None]:
    """``"tensorrt:dla1"`` -> ``("tensorrt", 1)``; a plain runtime name -> ``(name, None)``."""
    name, _, rest = target.partition(":")
    if not rest:
        return name, None
    if not (rest.startswith("dla") and rest[3:].isdigit()):
        raise EngineError(f"unknown accelerator {rest!r} in {target!r}: expected <runtime>:dla<core>")
    return name, int(rest[3:])


def mean_after_warmup(times_ms: list[float]) -> float:
    """Mean of a layer's per-call times without the first call (the warm-up), if there was more than one."""
    timed = times_ms[1:] or times_ms
    return sum(timed) / len(timed)


@dataclass(frozen=True)
class Timing:
    """Milliseconds of one inference call, split where the backend can tell the parts apart."""

    total_ms: float
    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None


class Runtime(ABC):
    """One inference backend. A subclass declares what the registry needs to find and choose it."""

    name: ClassVar[str]  # the config's ``type`` and the engine record's ``runtime``
    config_class: ClassVar[type[RuntimeConfig]]  # its ``[runtime]`` table, ``type: Literal[name]``
    priority: ClassVar[int]  # ``auto`` tries the backends from the highest priority down
    # artifacts made for these runtimes run here too, after the ones made for this runtime itself
    also_runs: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""  # how to make the backend run here, for ``expected_here``'s warning

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class.model_validate({})
        self._engine: Engine | None = None
        self._closed = False
        self.last_timing: Timing | None = None
        # one inference at a time per runtime: the agent's benchmark and the serving batcher may share
        # one, and a TensorRT execution context (and its buffers) must never run two calls at once
        self._infer_lock = threading.Lock()

    # -- identity ---------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def probe(cls) -> str | None:
        """None if this backend can run here, else why not (and how to fix it)."""

    @classmethod
    def expected_here(cls) -> str | None:
        """What makes this machine one the backend is made for (TensorRT: "this Jetson"), else None. Where a
        backend is expected and its ``probe`` fails, that is a fault to warn about, not a quiet fallback."""
        return None

    @abstractmethod
    def version(self) -> str:
        """Library version, part of the engine cache key."""

    @abstractmethod
    def accelerator(self) -> str:
        """What runs the model: GPU name + compute capability, or 'cpu'; part of the cache key."""

    def uses_gpu(self) -> bool:
        return self.accelerator() != "cpu"

    def dla_cores(self) -> int:
        """DLA cores (NVIDIA's Deep Learning Accelerator) this runtime can build for; 0 for most."""
        return 0

    def target(self) -> str:
        """What the selection and the reports call this instance: its ``name``, or ``name:dlaN`` on a DLA core
        (``dla_target``)."""
        return self.name

    def gpu_memory_mb(self) -> float | None:
        """Device memory in use by this process, where the backend can tell."""
        return None

    def supported_precisions(self) -> tuple[Precision, ...]:
        """Precisions this backend runs natively, best first."""
        return ("fp32",)

    def build_options(self) -> dict[str, Any]:
        """Options that change the built engine; part of the cache key."""
        return {}

    # -- life cycle -------------------------------------------------------------------------
    def build(self, onnx_path: str | Path, precision: Precision, out_dir: str | Path) -> Engine:
        """Turn an ONNX file into this backend's engine file inside ``out_dir``."""
        self._check_open()
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        if not onnx_path.is_file():
            raise EngineError(f"ONNX model not found: {onnx_path}")
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        engine = self._build_impl(onnx_path, precision, out_dir)
        build_s = time.perf_counter() - t0
        log.info("%s built %s (%s) in %.2fs", self.name, onnx_path.name, precision, build_s)
        return Engine(**{**engine.__dict__, "build_s": build_s})

    def load(self, engine: Engine) -> None:
        self._check_open()
        if engine.runtime != self.name:
            raise EngineError(f"engine was built by {engine.runtime}, not {self.name}")
        if not engine.path.is_file():
            raise EngineError(f"engine file missing: {engine.path}")
        if self._engine is not None:
            self._unload_impl()
            self._engine = None
        self._load_impl(engine)
        self._engine = engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise EngineError(f"{self.name}: no engine loaded; call load() first")
        return self._engine

    def infer(self, batch: F32) -> F32:
        """Run one batch (float32 NCHW) and return float32 logits."""
        engine = self.engine
        self._check_input(batch, engine)
        x = np.ascontiguousarray(batch)
        with self._infer_lock:
            t0 = time.perf_counter()
            out, timing = self._infer_impl(x)
            total = (time.perf_counter() - t0) * 1e3
            self.last_timing = timing if timing is not None else Timing(total_ms=total)
        return out

    def profile_layers(self, batch: int = 256, runs: int = 5) -> list[LayerTime]:
        """Per-layer times (like ``trtexec --dumpProfile``), averaged over ``runs`` calls after a warm-up.

        Runs on random input of the loaded engine's shape, in execution order.
        """
        engine = self.engine
        if runs < 1:
            raise EngineError(f"profiling needs at least one run, got {runs}")
        batch = max(1, min(batch, engine.max_batch))
        x = np.random.default_rng(0).standard_normal((batch, *engine.input_shape), dtype=np.float32)
        return self._profile_impl(x, runs)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._engine is not None:
                self._unload_impl()
            self._close_impl()
        finally:
            self._engine = None
            self._closed = True

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- checks -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"{self.name} runtime is closed")

    @staticmethod
    def _check_input(batch: F32, engine: Engine) -> None:
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            raise EngineError(f"input must be a float32 numpy array, got {getattr(batch, 'dtype', type(batch))}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != engine.input_shape:
            raise EngineError(
                f"input shape {tuple(batch.shape)} does not match the model's "
                f"(N, {', '.join(map(str, engine.input_shape))})"
            )
        if not 1 <= batch.shape[0] <= engine.max_batch:
            raise EngineError(f"batch size {batch.shape[0]} outside 1..{engine.max_batch}")

    # -- backend hooks ----------------------------------------------------------------------
    @abstractmethod
    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine: ...

    @abstractmethod
    def _load_impl(self, engine: Engine) -> None: ...

    @abstractmethod
    def _infer_impl(self, batch: F32) -> tuple[F32, Timing | None]: ...

    def _profile_impl(self, batch: F32, runs: int) -> list[LayerTime]:
        raise EngineError(f"{self.name}: per-layer profiling is not available for this runtime")

    def _unload_impl(self) -> None:  # noqa: B027  (optional hook: not every backend holds anything)
        """Release what ``_load_impl`` acquired."""

    def _close_impl(self) -> None:  # noqa: B027  (optional hook)
        """Release what the runtime holds beyond the loaded engine."""
