"""System telemetry: CPU/RAM via psutil everywhere; on a Jetson also GPU and EMC load, temperatures and
power rails (jtop where jetson-stats runs, else ``tegrastats``), the ``nvpmodel`` mode and whether
``jetson_clocks`` pinned the clocks (device/engine/jetson/).

A source that is not present is reported as absent (None), never as zero.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import psutil

from device.engine.jetson import clocks, release, tegrastats
from device.engine.jetson import sources as jetson_sources
from device.engine.jetson.sample import Sample
from shared.protocol import SystemInfo

log = logging.getLogger(__name__)

_MAX_ENTRIES = 64  # SystemInfo's bound on its dicts
_NAME = 64


def _bounded(values: dict[str, float]) -> dict[str, float] | None:
    return {k[:_NAME]: v for k, v in list(values.items())[:_MAX_ENTRIES]} or None


def jetson_fields(sample: Sample) -> dict[str, Any]:
    """The SystemInfo fields a Jetson sample fills (absent figures stay out, so they remain None)."""
    fields: dict[str, Any] = {
        "gpu_load_percent": sample.gpu_load_percent,
        "gpu_freq_mhz": sample.gpu_freq_mhz,
        "emc_load_percent": sample.emc_load_percent,
        "emc_freq_mhz": sample.emc_freq_mhz,
        "power_mw": _bounded(dict(sample.rails_mw)),
        "power_total_mw": sample.power_total_mw,
        "temperatures_c": _bounded(dict(sample.temperatures_c)),
        "clocks_locked": sample.jetson_clocks,
        "nvpmodel": sample.nvpmodel,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _add_jetson(info: dict[str, Any], names: list[str]) -> None:
    sample = jetson_sources.read_sample()
    if sample is not None:
        names.append(sample.source)
        info.update(jetson_fields(sample))
    if info.get("clocks_locked") is None and (locked := clocks.jetson_clocks_active()) is not None:
        names.append("jetson_clocks")
        info["clocks_locked"] = locked
    if info.get("nvpmodel") is None and (mode := clocks.nvpmodel_mode()) is not None:
        names.append("nvpmodel")
        info["nvpmodel"] = mode[:64]


def collect(gpu_mem_mb: float | None = None, jetson: bool | None = None) -> SystemInfo:
    """Snapshot of the device's health; Jetson sources only where they exist."""
    sources = ["psutil"]
    vm = psutil.virtual_memory()
    info: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "ram_used_mb": (vm.total - vm.available) / 2**20,
        "ram_total_mb": vm.total / 2**20,
        "process_rss_mb": psutil.Process(os.getpid()).memory_info().rss / 2**20,
        "gpu_mem_used_mb": gpu_mem_mb,
    }
    temps = _psutil_temperatures()
    if temps:
        info["temperatures_c"] = temps
    if jetson is None:
        jetson = release.is_jetson() or tegrastats.available()
    if jetson:
        _add_jetson(info, sources)
    return SystemInfo(sources=tuple(sources), **info)


def _psutil_temperatures() -> dict[str, float] | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return None
    out = {}
    for chip, entries in sensors.items():
        for i, e in enumerate(entries):
            if e.current is not None:
                out[f"{chip}{i if len(entries) > 1 else ''}"] = float(e.current)
    return out or None


def process_rss_mb() -> float | None:
    """This process's resident memory; None where /proc cannot tell (a chroot without it)."""
    try:
        return float(psutil.Process(os.getpid()).memory_info().rss / 2**20)
    except psutil.Error as e:
        log.debug("no RSS for this process: %s", e)
        return None


# CPU features that decide which ONNX Runtime kernels run (VNNI/AMX int8, BF16, Arm dot product), and so
# how much INT8 buys on a given machine: speed-ups measured on one CPU do not transfer to another.
_SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "i8mm",
    "bf16",
)


def isa_flags() -> tuple[str, ...]:
    """The speed-relevant ISA features of this CPU (``/proc/cpuinfo`` flags or features)."""
    isa = machine()["isa"]
    return tuple(str(f) for f in isa) if isinstance(isa, list) else ()


def machine() -> dict[str, object]:
    """What a benchmark ran on: CPU model, logical cores and the speed-relevant ISA features."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {
        "cpu": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "isa": [f for f in _SPEED_FLAGS if f in flags],
    }
