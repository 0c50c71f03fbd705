"""Small fakes of the ``tensorrt`` module (10.x or 11.x flavour) and of cuda-python's runtime API.

They stand in at the import edge (``sys.modules``), so the backend runs its own code unchanged: the
loader parses a real ONNX file's input, "builds" a plan that records what it was asked for, and the
runner runs a context that checks what TensorRT checks (profile ranges, bound addresses, the
current device on the calling thread). Each flavour offers only names its real bindings have
(``test_tensorrt_api.py`` checks the fakes' public names against the real wheels), and it refuses
what TensorRT refuses: precision flags on a strongly typed network, shapes outside the profile,
running on a thread where the device was never made current, dynamic shapes on DLA, a DLA core the
board does not have.
"""

from __future__ import annotations

import ast
import ctypes
import json
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import pytest

CLASSES = 10
WEAK_FLAGS = ("FP16", "INT8", "BF16", "FP8")  # TensorRT 10's weak-typing precision flags, gone in 11


class _Value:
    """An enum value of a fake TensorRT enum; it prints like the real ones."""

    def __init__(self, owner: str, name: str) -> None:
        self._owner, self._name = owner, name

    def __repr__(self) -> str:
        return f"{self._owner}.{self._name}"

    def __int__(self) -> int:
        return 0 if self._name == "STRONGLY_TYPED" else 1


def _enum(owner: str, *names: str) -> type:
    return type(owner, (), {n: _Value(owner, n) for n in names})


class ILogger:
    INTERNAL_ERROR = _Value("Severity", "INTERNAL_ERROR")
    ERROR = _Value("Severity", "ERROR")
    WARNING = _Value("Severity", "WARNING")
    INFO = _Value("Severity", "INFO")
    VERBOSE = _Value("Severity", "VERBOSE")

    def __init__(self) -> None:
        pass


class IProfiler:
    def __init__(self) -> None:
        pass


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]


class _Network:
    def __init__(self, flags: int) -> None:
        self._strongly_typed = bool(flags & 1)
        self._inputs: list[_Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> _Tensor:
        return self._inputs[index]


class OnnxParser:
    def __init__(self, network: _Network, logger: Any) -> None:
        self._network = network

    def parse_from_file(self, path: str) -> bool:
        model = onnx.load(path, load_external_data=False)
        inp = model.graph.input[0]
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim)
        self._network._inputs = [_Tensor(inp.name, dims)]
        return True

    @property
    def num_errors(self) -> int:
        return 0

    def get_error(self, index: int) -> str:
        return ""


class _Profile:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
        self._shapes[name] = (lo, opt, hi)


class _TimingCache:
    def __init__(self, blob: bytes) -> None:
        self._blob = bytes(blob)

    def serialize(self) -> bytes:
        return b"timing:fake-gpu:" + self._blob.removeprefix(b"timing:fake-gpu:") + b"+"


class _BuilderConfig:
    def __init__(self, trt: types.ModuleType) -> None:
        self._trt = trt
        self._flags = {"TF32"}  # TensorRT's default: TF32 on where the GPU has it
        self._profiles: list[_Profile] = []
        self._cache: _TimingCache | None = None
        self._pools: dict[str, int] = {}
        self.builder_optimization_level = 3
        self.default_device_type = trt.DeviceType.GPU
        self.DLA_core = -1

    def set_memory_pool_limit(self, pool: _Value, size: int) -> None:
        self._pools[repr(pool)] = size

    def set_flag(self, flag: _Value) -> None:
        self._flags.add(flag._name)

    def clear_flag(self, flag: _Value) -> None:
        self._flags.discard(flag._name)

    def get_flag(self, flag: _Value) -> bool:
        return flag._name in self._flags

    def add_optimization_profile(self, profile: _Profile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, blob: bytes) -> _TimingCache:
        if blob and not blob.startswith(b"timing:"):
            raise RuntimeError("Error Code 1: Serialization (corrupt timing cache)")
        return _TimingCache(blob)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        mismatch = bool(cache._blob) and not cache._blob.startswith(b"timing:fake-gpu:")
        if mismatch and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        if self._cache is None:
            raise RuntimeError("no timing cache set")
        return self._cache


class Builder:
    def __init__(self, logger: Any) -> None:
        self._logger = logger

    @property
    def num_DLA_cores(self) -> int:
        return int(sys.modules["tensorrt"]._dla_cores)

    def create_network(self, flags: int) -> _Network:
        return _Network(flags)

    def create_builder_config(self) -> _BuilderConfig:
        return _BuilderConfig(sys.modules["tensorrt"])

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _BuilderConfig) -> bytes | None:
        """A JSON "plan" of what was asked; None (with a logged error) where TensorRT refuses."""
        weak = sorted(config._flags & set(WEAK_FLAGS))
        if network._strongly_typed and weak:
            self._logger.log(ILogger.ERROR, f"precision flags {weak} are not allowed on a strongly typed network")
            return None
        inp = network._inputs[0]
        dynamic = inp.shape[0] == -1
        profiles = [p._shapes[inp.name] for p in config._profiles]
        if dynamic and not profiles:
            self._logger.log(ILogger.ERROR, "a network with dynamic shapes needs an optimisation profile")
            return None
        dla = config.default_device_type._name == "DLA"
        if dla and not 0 <= config.DLA_core < self.num_DLA_cores:
            self._logger.log(ILogger.ERROR, f"DLA core {config.DLA_core} does not exist")
            return None
        if dla and any(lo != hi for lo, _, hi in profiles):
            self._logger.log(ILogger.ERROR, "DLA does not support dynamic dimensions: min, opt and max must be equal")
            return None
        plan = {
            "input": inp.name,
            "shape": list(inp.shape),
            "profiles": [[list(s) for s in p] for p in profiles] if dynamic else [[list(inp.shape)] * 3],
            "flags": sorted(config._flags),
            "strongly_typed": network._strongly_typed,
            "device": config.default_device_type._name,
            "dla_core": config.DLA_core if dla else None,
        }
        return json.dumps(plan).encode()


class _Builder10(Builder):
    _fast_int8, _fast_fp16 = True, True

    @property
    def platform_has_fast_int8(self) -> bool:
        return self._fast_int8

    @property
    def platform_has_fast_fp16(self) -> bool:
        return self._fast_fp16


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self._profile = 0
        self._shape: tuple[int, ...] | None = None
        self._addresses: dict[str, int] = {}
        self.profiler: Any = None
        engine._contexts += 1

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if not 0 <= index < self._engine.num_optimization_profiles:
            return False
        self._profile, self._shape, self._addresses = index, None, {}
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self._engine._plan["profiles"][self._profile]
        n = int(shape[0])
        if name != self._engine._plan["input"] or not lo[0] <= n <= hi[0]:
            return False  # what TensorRT answers for a shape outside the current profile
        self._shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self._shape is None:
            raise RuntimeError("input shape not set")
        return (self._shape[0], CLASSES) if name == "logits" else self._shape

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        """logits[i, j] = (j + 1) * mean(x[i]): enough to see that copies and shapes line up."""
        cudart = sys.modules["cuda.bindings.runtime"]
        if not cudart._current_device_set() or self._shape is None or len(self._addresses) != 2:
            return False
        n, per = self._shape[0], int(self._shape[1] * self._shape[2] * self._shape[3])
        src = self._addresses[self._engine._plan["input"]]
        x = (ctypes.c_float * (n * per)).from_address(src)
        means = [sum(x[i * per : (i + 1) * per]) / per for i in range(n)]
        out = (ctypes.c_float * (n * CLASSES)).from_address(self._addresses["logits"])
        for i, m in enumerate(means):
            for j in range(CLASSES):
                out[i * CLASSES + j] = (j + 1) * m
        self._engine._profile_runs[self._profile] += 1
        if self.profiler is not None:
            for layer in ("conv1", "fc"):
                self.profiler.report_layer_time(layer, 0.25)
        return True


class _Engine:
    def __init__(self, plan: dict[str, Any], plan_bytes: int) -> None:
        self._plan = plan
        self._runs_on_dla: int | None = None  # the runtime's DLA core when it deserialized a DLA plan
        self._contexts = 0
        self._profile_runs = [0] * len(plan["profiles"])
        self.device_memory_size_v2 = 3 << 20

    @property
    def num_io_tensors(self) -> int:
        return 2

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._plan["profiles"])

    def get_tensor_name(self, index: int) -> str:
        return (self._plan["input"], "logits")[index]

    def get_tensor_mode(self, name: str) -> _Value:
        return TensorIOMode.INPUT if name == self._plan["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> object:
        return float32

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._plan["shape"]) if name == self._plan["input"] else (self._plan["shape"][0], CLASSES)

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self._plan["profiles"][index]]

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Engine10(_Engine):
    def __init__(self, plan: dict[str, Any], plan_bytes: int) -> None:
        super().__init__(plan, plan_bytes)
        self.device_memory_size = self.device_memory_size_v2


class Runtime:
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.DLA_core = -1

    @property
    def num_DLA_cores(self) -> int:
        return int(sys.modules["tensorrt"]._dla_cores)

    def deserialize_cuda_engine(self, plan: bytes) -> _Engine | None:
        try:
            data = json.loads(plan)
        except ValueError:
            return None
        trt = sys.modules["tensorrt"]
        engine: _Engine = trt._Engine(data, len(plan))
        if data.get("dla_core") is not None:  # TensorRT runs it on the runtime's core (0 when never set)
            engine._runs_on_dla = max(self.DLA_core, 0)
        return engine


class TensorIOMode:
    INPUT = _Value("TensorIOMode", "INPUT")
    OUTPUT = _Value("TensorIOMode", "OUTPUT")


float32 = _Value("DataType", "FLOAT")


def fake_tensorrt(major: int = 10, fast: tuple[bool, bool] = (True, True), dla_cores: int = 0) -> types.ModuleType:
    """A ``tensorrt`` module of the 10.x or 11.x flavour; ``fast`` is TensorRT 10's (fast INT8, fast FP16);
    ``dla_cores`` the board's DLA cores (two on Jetson AGX Orin)."""
    trt = types.ModuleType("tensorrt")
    flags = ("TF32", "SPARSE_WEIGHTS", "GPU_FALLBACK", *(WEAK_FLAGS if major == 10 else ()))
    builder = type("Builder", (_Builder10,), {"_fast_int8": fast[0], "_fast_fp16": fast[1]}) if major == 10 else Builder
    members: dict[str, Any] = {
        "__version__": "10.13.3.9" if major == 10 else "11.4.0.106",
        "BuilderFlag": _enum("BuilderFlag", *flags),
        "NetworkDefinitionCreationFlag": _enum("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
        "MemoryPoolType": _enum("MemoryPoolType", "WORKSPACE"),
        "DeviceType": _enum("DeviceType", "GPU", "DLA"),
        "TensorIOMode": TensorIOMode,
        "float32": float32,
        "ILogger": ILogger,
        "IProfiler": IProfiler,
        "Builder": builder,
        "OnnxParser": OnnxParser,
        "Runtime": Runtime,
        "_Engine": _Engine10 if major == 10 else _Engine,
        "_dla_cores": dla_cores,
    }
    for k, v in members.items():
        setattr(trt, k, v)
    return trt


# --- cuda-python -----------------------------------------------------------------------------


@dataclass
class FakeCudart:
    """cuda-python's runtime API on host memory: ``(status, value)`` tuples, failures on demand."""

    gpu: bytes = b"Orin"
    cc: tuple[int, int] = (8, 7)
    fail: set[str] = field(default_factory=set)  # function names that return an error status
    calls: list[tuple[str, int]] = field(default_factory=list)  # (function, thread id)
    _memory: dict[int, ctypes.Array[ctypes.c_char]] = field(default_factory=dict)
    _local: threading.local = field(default_factory=threading.local)

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def _status(self, name: str) -> int:
        self.calls.append((name, threading.get_ident()))
        return self.cudaError_t.cudaErrorInvalidValue if name in self.fail else self.cudaError_t.cudaSuccess

    def _current_device_set(self) -> bool:
        return getattr(self._local, "device", None) is not None

    def cudaGetErrorString(self, err: int) -> tuple[int, bytes]:
        return 0, b"invalid argument"

    def cudaSetDevice(self, index: int) -> tuple[int]:
        self._local.device = index
        return (self._status("cudaSetDevice"),)

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return self._status("cudaGetDeviceCount"), 1

    def cudaGetDeviceProperties(self, index: int) -> tuple[int, Any]:
        props = types.SimpleNamespace(name=self.gpu + b"\x00\x00", major=self.cc[0], minor=self.cc[1])
        return self._status("cudaGetDeviceProperties"), props

    def _alloc(self, name: str, size: int) -> tuple[int, int]:
        buf = ctypes.create_string_buffer(size)
        self._memory[ctypes.addressof(buf)] = buf
        return self._status(name), ctypes.addressof(buf)

    def cudaMallocHost(self, size: int) -> tuple[int, int]:
        return self._alloc("cudaMallocHost", size)

    def cudaMalloc(self, size: int) -> tuple[int, int]:
        return self._alloc("cudaMalloc", size)

    def _free(self, name: str, ptr: int) -> tuple[int]:
        status = self._status(name)
        if status == 0:
            self._memory.pop(int(ptr))
        return (status,)

    def cudaFree(self, ptr: int) -> tuple[int]:
        return self._free("cudaFree", ptr)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:
        return self._free("cudaFreeHost", ptr)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return self._status("cudaStreamCreate"), 7

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return (self._status("cudaStreamDestroy"),)

    def cudaEventCreate(self) -> tuple[int, int]:
        return self._status("cudaEventCreate"), 100 + len(self.calls)

    def cudaEventDestroy(self, event: int) -> tuple[int]:
        return (self._status("cudaEventDestroy"),)

    def cudaEventRecord(self, event: int, stream: int) -> tuple[int]:
        return (self._status("cudaEventRecord"),)

    def cudaEventSynchronize(self, event: int) -> tuple[int]:
        return (self._status("cudaEventSynchronize"),)

    def cudaEventElapsedTime(self, start: int, end: int) -> tuple[int, float]:
        return self._status("cudaEventElapsedTime"), 0.125

    def cudaMemcpyAsync(self, dst: int, src: int, size: int, kind: int, stream: int) -> tuple[int]:
        status = self._status("cudaMemcpyAsync")
        if status == 0:
            ctypes.memmove(int(dst), int(src), size)
        return (status,)

    def threads_that_set_the_device(self) -> set[int]:
        return {tid for name, tid in self.calls if name == "cudaSetDevice"}

    @property
    def live_allocations(self) -> int:
        return len(self._memory)


def install(monkeypatch: pytest.MonkeyPatch, trt: types.ModuleType, cudart: FakeCudart) -> None:
    """Put the fakes where ``import tensorrt`` and ``from cuda.bindings import runtime`` find them."""
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    runtime = types.ModuleType("cuda.bindings.runtime")
    for name in dir(cudart):
        if name.startswith("cuda") or name == "_current_device_set":
            setattr(runtime, name, getattr(cudart, name))
    bindings.runtime = runtime  # type: ignore[attr-defined]
    cuda.bindings = bindings  # type: ignore[attr-defined]
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)


def fixed_batch_onnx(path: Path, batch: int) -> Path:
    """A tiny ONNX (Relu) whose input has a fixed batch."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "fixed", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


# --- what the fakes offer, for the API conformance test ------------------------------------------

CUDA_SIDE = frozenset({"FakeCudart", "_Value"})  # not TensorRT's
ONLY_IN_10 = frozenset({"_Builder10", "_Engine10"})


def public_names(major: int) -> set[str]:
    """Every TensorRT name a fake of that flavour offers: module members, enum values, and the methods,
    properties and attributes of the classes that stand for TensorRT's (read from this file)."""
    trt = fake_tensorrt(major)
    names = {n for n in vars(trt) if not n.startswith("_")} | {"__version__"}
    for value in vars(trt).values():
        if isinstance(value, type):  # enum values (and the severities of ILogger)
            names |= {n for n, v in vars(value).items() if isinstance(v, _Value)}
    skip = CUDA_SIDE | (ONLY_IN_10 if major != 10 else frozenset())
    tree = ast.parse(Path(__file__).read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name not in skip):
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef) and node in cls.body:
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                if isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
            elif isinstance(node, ast.AnnAssign | ast.Assign) and node in cls.body:
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
                names |= {e.id for t in targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)}
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def plan_of(engine_path: Path) -> dict[str, Any]:
    """What the fake builder was asked for (its "plan" is JSON)."""
    data: dict[str, Any] = json.loads(engine_path.read_bytes())
    return data


def batch_of(n: int) -> Any:
    """``n`` random input images of the CIFAR shape (a numpy float32 array)."""
    import numpy as np

    return np.random.default_rng(n).standard_normal((n, 3, 32, 32), dtype=np.float32)
