"""One reading of a Jetson's telemetry, whichever tool gave it (``tegrastats`` or jtop), and the
base of the streams that read them in the background.

A figure the source did not give is None (absent), never zero: tegrastats run without root prints no
EMC or GPU frequency, and JetPack 6's AGX Orin omits ``EMC_FREQ`` altogether.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

SourceName = Literal["tegrastats", "jtop"]

# The board's input rail, where it has one, is the total the board draws (Nano: POM_5V_IN; TX1, TX2,
# Xavier NX, Orin NX and Orin Nano: VDD_IN). AGX Xavier and AGX Orin have none, so the total is the sum
# of their rails, as jtop computes it (jtop/core/power.py::total_power). On AGX Orin, VIN_SYS_5V0 is one
# rail among others, not the total (jetson_stats issue #344).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
SUM_OF_RAILS = "sum"


@dataclass(frozen=True)
class Sample:
    """What one tegrastats line (or one jtop update) says about the board."""

    source: SourceName
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    cpu_loads_percent: tuple[float | None, ...] = ()  # one per core; None: the core is off
    emc_load_percent: float | None = None  # memory controller: share of its bandwidth in use
    emc_freq_mhz: float | None = None
    gpu_load_percent: float | None = None  # GR3D
    gpu_freq_mhz: float | None = None  # the highest of the per-GPC frequencies (Orin prints one per GPC)
    temperatures_c: Mapping[str, float] = field(default_factory=dict)  # online sensors only, lower-case names
    rails_mw: Mapping[str, float] = field(default_factory=dict)  # each rail's power now
    rails_avg_mw: Mapping[str, float] = field(default_factory=dict)  # as the source averages it
    power_total_mw: float | None = None  # what the board draws (see INPUT_RAILS)
    power_total_of: str | None = None  # the input rail it was read from, or SUM_OF_RAILS
    nvpmodel: str | None = None  # only jtop reports these two; clocks.py asks the tools otherwise
    jetson_clocks: bool | None = None


def board_power(rails_mw: Mapping[str, float]) -> tuple[float, str] | None:
    """The board's total power in mW and what it was read from: the input rail, else the sum of rails."""
    for name in INPUT_RAILS:
        if name in rails_mw:
            return rails_mw[name], name
    if not rails_mw:
        return None
    return sum(rails_mw.values()), SUM_OF_RAILS


class SampleStream(ABC):
    """Samples read in the background between ``start`` and ``stop`` (a context manager), handed to
    subscribers on the reading thread and kept for ``latest`` and ``wait_sample``."""

    source: SourceName

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: Sample | None = None
        self._count = 0
        self._subscribers: list[Callable[[Sample], None]] = []

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop reading; returns promptly and leaves no process or thread behind."""

    def __enter__(self) -> SampleStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def latest(self) -> Sample | None:
        with self._cond:
            return self._latest

    def wait_sample(self, timeout: float) -> Sample | None:
        """The next sample to arrive within ``timeout`` seconds, None when none did."""
        with self._cond:
            seen = self._count
            if not self._cond.wait_for(lambda: self._count > seen, timeout=max(0.0, timeout)):
                return None
            return self._latest

    def subscribe(self, callback: Callable[[Sample], None]) -> None:
        with self._cond:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Sample], None]) -> None:
        with self._cond:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def _publish(self, sample: Sample) -> None:
        """Called by the reading thread for each sample. A subscriber that raises is logged, not fatal:
        it must not end the reading thread."""
        with self._cond:
            self._latest = sample
            self._count += 1
            subscribers = list(self._subscribers)
            self._cond.notify_all()
        for callback in subscribers:
            try:
                callback(sample)
            except Exception:  # any subscriber bug; the stream keeps reading
                log.exception("a %s subscriber failed", self.source)
