"""``tegrastats``: one line parsed into a ``Sample``, and a long-lived process read line by line.

The parser is hand-written because nothing else parses these lines: jetson-stats (jtop) is the only
library that does, and it reads them through its root service (``jtop.service``), which the agent
cannot assume. The formats it covers, from real lines (tests/device/engine/jetson/test_tegrastats.py):

- JetPack 4 (L4T R32): power rails ``POM_5V_IN 1750/1628`` (current/average mW, no unit),
  ``GR3D_FREQ 0%@76``, ``EMC_FREQ 0%@1600``; without root no ``@freq`` (``EMC_FREQ 0%``).
- JetPack 5 (R35): a ``MM-DD-YYYY HH:MM:SS`` prefix, ``VDD_IN 5000mW/5000mW``, ``GR3D_FREQ 0%@[114]``.
- JetPack 6 (R36): lower-case temperatures (``cpu@45.5C``), ``GR3D_FREQ 0%@[305,305]`` (one frequency per
  GPC), runs of several spaces; AGX Orin without root prints no ``EMC_FREQ``.
- JetPack 7 (R39): three power values ``5139mW/5139mW/5139mW`` and two temperatures ``cpu@52.968C/52.968C``
  (the first is the current value; the meaning of the others is undocumented, so they are not used).

Tokens are found by pattern, never by position: their order differs between boards and releases.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from typing import IO

from device.engine.jetson.sample import Sample, SampleStream, board_power

log = logging.getLogger(__name__)

_NUM = r"\d+(?:\.\d+)?"
_TIMESTAMP = re.compile(r"^\s*\d+-\d+-\d+ \d+:\d+:\d+\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CPU_CORE = re.compile(r"(\d+)%")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
# GR3D_FREQ 62%@306 | 0%@[114] | 0%@[305,305] | 0% (no root) | @[1000,1000,1000] (Thor: no load)
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[([\d,]+)\]|@(\d+))?")
# name@45.5C, JetPack 7: name@52.968C/52.968C; "5%@1224" (a CPU core) has no name before the @
_TEMP = re.compile(rf"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?{_NUM})C(?:/-?{_NUM}C)?(?!\S)")
# JetPack 5+: NAME 2763mW/2846mW[/2846mW]; JetPack 4: NAME 1750/1628 with no unit. A rail is a whole
# token pair, so "RAM 1923/3964MB" (a unit follows) is not one.
_RAIL_MW = re.compile(rf"(?<!\S)([A-Z][A-Z0-9_]*) ({_NUM})mW/({_NUM})mW(?:/{_NUM}mW)?(?!\S)")
_RAIL_PLAIN = re.compile(rf"(?<!\S)([A-Z][A-Z0-9_]*) ({_NUM})/({_NUM})(?!\S)")
OFFLINE_C = -256.0  # a sensor that is off (AGX Orin's CV0@-256C, GPU@-256C)
# PMIC@100C (and PMIC@50C on later releases) is a constant, not a reading
_NOT_SENSORS = frozenset({"pmic"})
_NOT_RAILS = frozenset({"NC"})  # AGX Orin's unconnected monitor channels


def _number(text: str | None) -> float | None:
    return float(text) if text else None


def _pair(pattern: re.Pattern[str], line: str) -> tuple[float | None, float | None]:
    m = pattern.search(line)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def _cpu_loads(line: str) -> tuple[float | None, ...]:
    m = _CPU.search(line)
    if m is None:
        return ()
    loads: list[float | None] = []
    for core in m.group(1).split(","):
        load = _CPU_CORE.match(core.strip())
        loads.append(float(load.group(1)) if load else None)  # "off": the core is powered down
    return tuple(loads)


def _gpu(line: str) -> tuple[float | None, float | None]:
    m = _GR3D.search(line)
    if m is None:
        return None, None
    load, per_gpc, single = m.groups()
    freqs = [float(f) for f in (per_gpc or "").split(",") if f]
    return _number(load), max(freqs) if freqs else _number(single)


def _temperatures(line: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in _TEMP.findall(line):
        key, celsius = name.lower(), float(value)
        if celsius > OFFLINE_C and key not in _NOT_SENSORS:
            out[key] = celsius
    return out


def _rails(line: str) -> tuple[dict[str, float], dict[str, float]]:
    found = _RAIL_MW.findall(line) or _RAIL_PLAIN.findall(line)
    now = {name: float(cur) for name, cur, _ in found if name not in _NOT_RAILS}
    avg = {name: float(mean) for name, _, mean in found if name not in _NOT_RAILS}
    return now, avg


def parse_line(line: str) -> Sample:
    """One tegrastats line (JetPack 4 to 7, with or without root). What the line lacks is None."""
    line = _TIMESTAMP.sub("", line)
    ram_used, ram_total = _pair(_RAM, line)
    swap_used, swap_total = _pair(_SWAP, line)
    emc = _EMC.search(line)
    gpu_load, gpu_freq = _gpu(line)
    rails, rails_avg = _rails(line)
    total = board_power(rails)
    return Sample(
        source="tegrastats",
        ram_used_mb=ram_used,
        ram_total_mb=ram_total,
        swap_used_mb=swap_used,
        swap_total_mb=swap_total,
        cpu_loads_percent=_cpu_loads(line),
        emc_load_percent=float(emc.group(1)) if emc else None,
        emc_freq_mhz=_number(emc.group(2)) if emc else None,
        gpu_load_percent=gpu_load,
        gpu_freq_mhz=gpu_freq,
        temperatures_c=_temperatures(line),
        rails_mw=rails,
        rails_avg_mw=rails_avg,
        power_total_mw=total[0] if total else None,
        power_total_of=total[1] if total else None,
    )


def available() -> bool:
    return shutil.which("tegrastats") is not None


class TegrastatsStream(SampleStream):
    """One ``tegrastats --interval N`` process for as long as the stream runs; a thread parses its lines.

    The process runs in its own session, so ``stop`` ends it and anything it started (SIGTERM, then
    SIGKILL to the group; the pipe then closes and the thread ends): nothing outlives the stream, and
    ``stop`` returns within about twice its timeout whatever the tool does.
    """

    source = "tegrastats"

    def __init__(self, interval_ms: int = 100, binary: str | None = None) -> None:
        super().__init__()
        if interval_ms < 1:
            raise ValueError(f"interval_ms must be >= 1, got {interval_ms}")
        self.interval_ms = interval_ms
        self._binary = binary
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the process; raises OSError when ``tegrastats`` cannot be run."""
        if self._proc is not None:
            raise RuntimeError("the tegrastats stream is already running")
        binary = self._binary or shutil.which("tegrastats")
        if binary is None:
            raise FileNotFoundError("tegrastats is not on PATH (not a Jetson?)")
        self._proc = subprocess.Popen(  # noqa: S603  (fixed argv; the binary is the one on PATH)
            [binary, "--interval", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",  # a stray byte must not end the reading thread
            start_new_session=True,
        )
        if self._proc.stdout is None:  # unreachable with stdout=PIPE; keeps the type narrow
            raise RuntimeError("tegrastats has no stdout pipe")
        self._thread = threading.Thread(target=self._read, args=(self._proc.stdout,), name="tegrastats", daemon=True)
        self._thread.start()
        log.debug("tegrastats started (pid %d, every %d ms)", self._proc.pid, self.interval_ms)

    def _read(self, out: IO[str]) -> None:
        for line in out:
            if line.strip():
                self._publish(parse_line(line))
        log.debug("tegrastats output ended")

    def stop(self, timeout: float = 2.0) -> None:
        proc, thread = self._proc, self._thread
        self._proc = self._thread = None
        if proc is None:
            return
        _end_group(proc, timeout)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # something still holds the pipe open; the daemon thread is left
                log.warning("the tegrastats reader did not end within %.1f s", timeout)
        if proc.stdout is not None and (thread is None or not thread.is_alive()):
            proc.stdout.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _end_group(proc: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM to the process's group and reap it; then SIGKILL to whatever of the group is left (a
    child that ignored SIGTERM would otherwise hold the pipe open)."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("tegrastats (pid %d) ignored SIGTERM for %.1f s; killing it", proc.pid, timeout)
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("tegrastats (pid %d) did not exit after SIGKILL", proc.pid)


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # nothing of the group is left
    except PermissionError:  # the group is not ours to signal: the process itself still is
        if proc.poll() is None:
            proc.send_signal(sig)
