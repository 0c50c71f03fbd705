"""Helpers of the OpenVINO backend: the lazy import, what the device reports, reading its profiler."""

from __future__ import annotations

from typing import Any

from device.engine import sysinfo
from device.engine.runtimes.base import LayerTime, RuntimeUnavailableError, mean_after_warmup

INSTALL_HINT = "install it with `pip install 'edgeloop[openvino]'` (or `pip install openvino`)"
ACCELERATOR_MAX = 128  # the wire's bound on a report's accelerator string


def load_openvino() -> Any:
    """Import openvino, or say which backend needed it and how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise RuntimeUnavailableError(f"the openvino backend needs the openvino package: {INSTALL_HINT}") from e
    return openvino


def device_property(core: Any, device: str, name: str, default: Any = None) -> Any:
    """A read-only property of an OpenVINO device, or ``default`` where the plugin does not have it."""
    try:
        return core.get_property(device, name)
    except RuntimeError:  # OpenVINO raises a bare RuntimeError for an unknown property
        return default


def capabilities(core: Any, device: str) -> tuple[str, ...]:
    """OPTIMIZATION_CAPABILITIES: what the plugin computes natively (FP32, INT8, FP16, BF16, EXPORT_IMPORT...)."""
    return tuple(str(c) for c in device_property(core, device, "OPTIMIZATION_CAPABILITIES", ()) or ())


def accelerator(device: str, full_name: str) -> str:
    """``cpu:<CPU model> (<ISA>)`` or ``gpu:<GPU name>``: in the engine cache key, so compiled models stay with the
    CPU model and instruction set (and OpenVINO version) they were compiled for."""
    kind = device.split(".", maxsplit=1)[0].lower()
    text = f"{kind}:{full_name.strip() or '?'}"
    if kind == "cpu":
        text += f" ({'+'.join(sysinfo.isa_flags()) or sysinfo.machine()['arch']})"
    return text[:ACCELERATOR_MAX]


def layer_times(runs: list[list[Any]]) -> list[LayerTime]:
    """Mean time per executed node from OpenVINO's performance counters (one list of ProfilingInfo per call),
    the first call of each node dropped; ``shapes`` of the runtime graph come from ``output_shapes``."""
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for infos in runs:
        for info in infos:
            if not str(info.status).endswith("EXECUTED"):
                continue  # NOT_RUN / OPTIMIZED_OUT: fused into a neighbour, or a constant
            durations.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1e3)
            ops[info.node_name] = str(info.node_type)
    return [LayerTime(node, ops[node], mean_after_warmup(ds)) for node, ds in durations.items()]


def output_shapes(compiled: Any) -> dict[str, tuple[int, ...]]:
    """Output shape of every node of a compiled model's runtime graph with static shapes (by node name)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        if op.get_output_size() and op.get_output_partial_shape(0).is_static:
            shapes[op.get_friendly_name()] = tuple(int(d) for d in op.get_output_shape(0))
    return shapes


def convolution_kernels(compiled: Any) -> dict[str, Any]:
    """How the compiled model runs its convolutions: how many in INT8 and in float, and which kernels
    (``jit_avx2_I8``, ``brgconv_avx512_f32``...: the ISA they were compiled for)."""
    int8, floating, kernels = 0, 0, set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) != "Convolution":
            continue
        if info["runtimePrecision"].astype(str) in ("u8", "i8"):
            int8 += 1
        else:
            floating += 1
        kernels.add(info["primitiveType"].astype(str))
    return {"conv_int8": int8, "conv_float": floating, "conv_kernels": sorted(kernels)}
