"""Helpers of the ONNX Runtime backend: the lazy import and reading ORT's profiler output."""

from __future__ import annotations

from typing import Any

from device.engine.runtimes.base import LayerTime, RuntimeUnavailableError, mean_after_warmup

INSTALL_HINT = "install it with `pip install 'edgeloop[device]'` (or `pip install onnxruntime`)"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def load_onnxruntime() -> Any:
    """Import onnxruntime, or say which backend needed it and how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeUnavailableError(f"the onnxruntime backend needs the onnxruntime package: {INSTALL_HINT}") from e
    return onnxruntime


def layer_times(events: list[dict[str, Any]]) -> list[LayerTime]:
    """Mean kernel time per node from an ORT profile (Chrome trace JSON), first call of each dropped."""
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name.removesuffix("_kernel_time")
        durations.setdefault(node, []).append(float(e.get("dur", 0)) / 1e3)  # microseconds -> ms
        args = e.get("args", {})
        ops[node] = str(args.get("op_name", "?"))
        out = args.get("output_type_shape") or []
        dims = next(iter(out[0].values()), None) if out and isinstance(out[0], dict) else None
        shapes[node] = tuple(int(d) for d in dims) if dims else None
    # dicts keep first-seen order: execution order
    return [LayerTime(node, ops[node], mean_after_warmup(ds), shapes[node]) for node, ds in durations.items()]
