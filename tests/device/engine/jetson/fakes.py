"""Stand-ins for a Jetson's tools on this machine: a ``tegrastats`` script first on PATH (a real process
that prints real lines), small ``nvpmodel``/``jetson_clocks`` scripts, and a ``jtop`` module."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_TEGRASTATS = '''#!{python}
"""A stand-in for tegrastats: prints the lines of $FAKE_TEGRASTATS_LINES, one every --interval ms."""
import os, signal, subprocess, sys, time

args = sys.argv[1:]
interval = int(args[args.index("--interval") + 1]) / 1000 if "--interval" in args else 1.0
with open(os.environ["FAKE_TEGRASTATS_LINES"]) as f:
    lines = f.read().splitlines()
pids = [os.getpid()]
if os.environ.get("FAKE_TEGRASTATS_STUBBORN"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    pids.append(subprocess.Popen(["sleep", "600"]).pid)  # a child holding stdout open
with open(os.environ["FAKE_TEGRASTATS_PIDS"], "w") as f:
    f.write(" ".join(map(str, pids)))
repeat = os.environ.get("FAKE_TEGRASTATS_REPEAT") == "1"
i = 0
while True:
    if i < len(lines) or repeat:
        print(lines[i % len(lines)], flush=True)
    i += 1
    time.sleep(interval)
'''


def write_script(bindir: Path, name: str, text: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def first_on_path(monkeypatch: pytest.MonkeyPatch, bindir: Path) -> None:
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


@dataclass
class FakeTegrastats:
    pids_file: Path

    def pids(self) -> list[int]:
        """The fake's pid and (stubborn) its child's, once it has started."""
        return [int(p) for p in self.pids_file.read_text().split()]


def install_tegrastats(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: Sequence[str],
    repeat: bool = True,
    stubborn: bool = False,
) -> FakeTegrastats:
    """A ``tegrastats`` first on PATH printing ``lines`` (over and over with ``repeat``, else once and
    then nothing). ``stubborn``: it ignores SIGTERM and starts a child that holds its stdout open."""
    bindir = tmp_path / "bin"
    write_script(bindir, "tegrastats", _TEGRASTATS.format(python=sys.executable))
    data = tmp_path / "tegrastats-lines.txt"
    data.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("FAKE_TEGRASTATS_LINES", str(data))
    monkeypatch.setenv("FAKE_TEGRASTATS_PIDS", str(tmp_path / "tegrastats.pids"))
    monkeypatch.setenv("FAKE_TEGRASTATS_REPEAT", "1" if repeat else "0")
    if stubborn:
        monkeypatch.setenv("FAKE_TEGRASTATS_STUBBORN", "1")
    first_on_path(monkeypatch, bindir)
    return FakeTegrastats(tmp_path / "tegrastats.pids")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that never reaps it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: Sequence[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


# What a jtop 4.x client holds, in the shapes its docstrings give (jtop/jtop.py @ 4.2.12); the values are
# those of the Orin Nano (JetPack 6.2) dump in the research notes (section 3), a shape reference only.
JTOP_POWER = {
    "rail": {
        "VDD_CPU_GPU_CV": {
            "volt": 4928,
            "curr": 216,
            "warn": 32760,
            "crit": 32760,
            "power": 1064,
            "online": True,
            "avg": 806,
        },
        "VDD_SOC": {
            "volt": 4936,
            "curr": 312,
            "warn": 32760,
            "crit": 32760,
            "power": 1540,
            "online": True,
            "avg": 1524,
        },
    },
    "tot": {
        "volt": 4936,
        "curr": 1040,
        "warn": 5232,
        "crit": 5232,
        "power": 5133,
        "online": True,
        "avg": 4800,
        "name": "VDD_IN",
    },
}
JTOP_TEMPERATURE = {
    "cpu": {"temp": 46.062, "online": True}, "cv0": {"temp": -256, "online": False},
    "cv1": {"temp": -256, "online": False}, "cv2": {"temp": -256, "online": False},
    "gpu": {"temp": 46.406, "online": True}, "soc0": {"temp": 45.875, "online": True},
    "soc1": {"temp": 47.906, "online": True}, "soc2": {"temp": 45.25, "online": True},
    "tj": {"temp": 47.906, "online": True},
}  # fmt: skip
JTOP_GPU = {
    "gpu": {
        "type": "integrated",
        "status": {"railgate": False, "tpc_pg_mask": False, "3d_scaling": True, "load": 4.8},
        "freq": {"governor": "nvhost_podgov", "cur": 306000, "max": 1020000, "min": 306000, "GPC": [305981]},
        "power_control": "auto",
    }
}
JTOP_MEMORY = {
    "EMC": {"cur": 2133000, "max": 3199000, "min": 204000, "override": 0, "val": 0, "online": True},
    "RAM": {"tot": 3688892, "used": 1687344, "free": 737636, "buffers": 99660, "cached": 1258132, "shared": 36904},
    "SWAP": {"tot": 1844440, "used": 0, "cached": 0},
}


class _NVPModel:
    def __str__(self) -> str:
        return "25W"


class FakeJtopClient:
    """``jtop.jtop``: ``start`` hands one update to the observers, then a thread one per interval."""

    answers = True  # False: the service is not running, ``start`` raises as jtop does
    clients: list[FakeJtopClient]  # set per install_jtop

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.observers: set[Callable[[Any], None]] = set()
        self.closed = threading.Event()
        self.power: dict[str, Any] = dict(JTOP_POWER)
        self.temperature, self.gpu, self.memory = JTOP_TEMPERATURE, JTOP_GPU, JTOP_MEMORY
        self.nvpmodel: object | None = _NVPModel()
        self.jetson_clocks: object | None = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        type(self).clients.append(self)

    def attach(self, observer: Callable[[Any], None]) -> None:
        self.observers.add(observer)

    def detach(self, observer: Callable[[Any], None]) -> None:
        self.observers.discard(observer)

    def start(self) -> None:
        if not type(self).answers:
            raise ConnectionRefusedError(111, "The jtop.service is not active")
        self._notify()
        self._thread.start()

    def _notify(self) -> None:
        for observer in list(self.observers):
            observer(self)

    def _run(self) -> None:
        while not self.closed.wait(self.interval):
            self._notify()

    def close(self) -> None:
        self.closed.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def install_jtop(monkeypatch: pytest.MonkeyPatch, answers: bool = True) -> type[FakeJtopClient]:
    """A ``jtop`` module (jetson-stats) in sys.modules whose client class is a ``FakeJtopClient``."""
    client = type("FakeJtop", (FakeJtopClient,), {"answers": answers, "clients": []})
    module = types.ModuleType("jtop")
    module.jtop = client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jtop", module)
    return client


def no_jtop(monkeypatch: pytest.MonkeyPatch) -> None:
    """jetson-stats not installed (``import jtop`` raises ImportError), wherever the tests run."""
    monkeypatch.setitem(sys.modules, "jtop", None)
