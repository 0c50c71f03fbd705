"""System telemetry: CPU/RAM via psutil everywhere; on a Jetson also GPU load, temperatures and
power from ``tegrastats``, clock locking (``jetson_clocks --show``) and the ``nvpmodel`` mode.

A source that is not present is reported as absent (None), never as zero.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared.protocol import SystemInfo

log = logging.getLogger(__name__)

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
_TEMP = re.compile(r"\b([A-Za-z0-9_]+)@(-?\d+(?:\.\d+)?)C\b")
_POWER = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW(?:/(\d+)mW)?")


@dataclass
class Tegrastats:
    gpu_load_percent: float | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    temperatures_c: dict[str, float] = field(default_factory=dict)
    power_mw: dict[str, float] = field(default_factory=dict)


def parse_tegrastats(line: str) -> Tegrastats:
    """Parse one tegrastats line (Nano/TX2/Xavier/Orin formats)."""
    out = Tegrastats()
    if m := _RAM.search(line):
        out.ram_used_mb, out.ram_total_mb = float(m.group(1)), float(m.group(2))
    if m := _GR3D.search(line):
        out.gpu_load_percent = float(m.group(1))
    for name, value in _TEMP.findall(line):
        t = float(value)
        if t > -200:  # tegrastats prints -256C for a sensor that is off
            out.temperatures_c[name.lower()] = t
    for name, now, _avg in _POWER.findall(line):
        if name not in ("RAM", "SWAP", "EMC_FREQ", "GR3D_FREQ", "IRAM", "CPU"):
            out.power_mw[name] = float(now)
    return out


def _run(argv: list[str], timeout: float = 3.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as e:
        log.debug("%s failed: %s", argv[0], e)
        return None
    return done.stdout if done.returncode == 0 else None


def read_tegrastats(timeout: float = 3.0) -> Tegrastats | None:
    """One sample from ``tegrastats``, or None where it does not exist."""
    binary = shutil.which("tegrastats")
    if binary is None:
        return None
    try:
        proc = subprocess.Popen(  # noqa: S603  (fixed argv, binary resolved on PATH)
            [binary, "--interval", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    except OSError:
        return None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.stdout is not None:
            line = proc.stdout.readline()
            if line.strip():
                return parse_tegrastats(line)
        return None
    finally:
        proc.kill()
        proc.wait(timeout=2)


def clocks_locked() -> bool | None:
    """Whether jetson_clocks pinned the clocks (CPU min == max), None off-Jetson."""
    text = _run(["jetson_clocks", "--show"])
    if text is None:
        return None
    cpus = re.findall(r"MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text)
    if not cpus:
        return None
    return all(lo == hi for lo, hi, _ in cpus)


def nvpmodel_mode() -> str | None:
    text = _run(["nvpmodel", "-q"])
    if text is None:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    return m.group(1) if m else None


def collect(gpu_mem_mb: float | None = None, jetson: bool | None = None) -> SystemInfo:
    """Snapshot of the device's health; Jetson sources only where they exist."""
    sources = ["psutil"]
    vm = psutil.virtual_memory()
    info: dict[str, object] = {
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
        jetson = os.path.exists("/etc/nv_tegra_release") or shutil.which("tegrastats") is not None
    if jetson:
        ts = read_tegrastats()
        if ts is not None:
            sources.append("tegrastats")
            info["gpu_load_percent"] = ts.gpu_load_percent
            if ts.temperatures_c:
                info["temperatures_c"] = ts.temperatures_c
            if ts.power_mw:
                info["power_mw"] = ts.power_mw
        locked = clocks_locked()
        if locked is not None:
            sources.append("jetson_clocks")
            info["clocks_locked"] = locked
        mode = nvpmodel_mode()
        if mode is not None:
            sources.append("nvpmodel")
            info["nvpmodel"] = mode
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


def process_rss_mb() -> float:
    return float(psutil.Process(os.getpid()).memory_info().rss / 2**20)


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
