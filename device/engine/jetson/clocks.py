"""The power mode (``nvpmodel -q``) and whether ``jetson_clocks`` pinned the clocks (``jetson_clocks --show``).

Both decide what a benchmark measures: the same engine runs at very different speeds in a 7 W and a
MAXN mode, and with or without locked clocks. Each answer is None where the tool is absent or refuses
(``jetson_clocks --show`` needs root).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

log = logging.getLogger(__name__)

# "NV Power Mode: MAXN_SUPER" then the mode's id on the next line; NVPM WARN/ERROR lines may surround them
_MODE = re.compile(r"^NV Power Mode:\s*(\S+)", re.MULTILINE)
# cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2112000 IdleStates: ...
_CPU = re.compile(r"^cpu\d+:\s+Online=(\d)\b.*?MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", re.MULTILINE)
_ENGINE = re.compile(r"^(GPU|EMC) MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", re.MULTILINE)


def run_tool(argv: list[str], timeout: float = 3.0) -> str | None:
    """The tool's stdout, None when it is not installed or cannot run. A non-zero exit still gives the
    output: ``nvpmodel -q`` without root prints the mode, then fails on files it may not read."""
    binary = shutil.which(argv[0])
    if binary is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603  (fixed argv; the binary is the one on PATH)
            [binary, *argv[1:]], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.debug("%s failed: %s", argv[0], e)
        return None
    if done.returncode != 0:
        log.debug("%s exited with %d: %s", argv[0], done.returncode, done.stderr.strip()[:200])
    return done.stdout


def parse_nvpmodel(text: str) -> str | None:
    m = _MODE.search(text)
    return m.group(1) if m else None


def parse_jetson_clocks(text: str) -> bool | None:
    """Whether the clocks are pinned, as jtop decides it: every online CPU and the GPU at MinFreq ==
    MaxFreq, and the EMC at its MaxFreq. None when the text lists no CPU."""
    cpus = [(lo, hi) for online, lo, hi, _ in _CPU.findall(text) if online == "1"]
    if not cpus:
        return None
    pinned = all(lo == hi for lo, hi in cpus)
    for name, lo, hi, cur in _ENGINE.findall(text):
        pinned = pinned and (cur == hi if name == "EMC" else lo == hi)
    return pinned


def nvpmodel_mode() -> str | None:
    """The power mode's name (``MAXN``, ``15W``, ...), None off a Jetson."""
    text = run_tool(["nvpmodel", "-q"])
    return parse_nvpmodel(text) if text is not None else None


def jetson_clocks_active() -> bool | None:
    """Whether ``jetson_clocks`` pinned the clocks, None off a Jetson or without root."""
    text = run_tool(["jetson_clocks", "--show"])
    return parse_jetson_clocks(text) if text is not None else None
