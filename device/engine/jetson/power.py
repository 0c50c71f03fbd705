"""Board power while a benchmark runs: mean and peak in mW, and energy in mJ over the run.

    with PowerSampler() as power:
        run_the_timed_part()
    reading = power.reading()          # None off a Jetson, or when no sample fell in the run
    per_image = reading.energy_mj_per_image(images) if reading else None

The total is the board's input rail where it has one, else the sum of its rails (sample.INPUT_RAILS).
Each sample is the power at one instant (tegrastats' "current" value, or jtop's), taken every
``interval_ms``; their mean estimates the mean power over the run, and energy is that mean times the
sampled time (mW x s = mJ). ``paused()`` leaves out parts of the run (an evaluation between the timed
rounds) from both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from device.engine.jetson import sources
from device.engine.jetson.sample import Sample, SampleStream, SourceName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerReading:
    source: SourceName
    total_of: str  # the input rail read (VDD_IN, POM_5V_IN), or "sum" of the rails
    samples: int
    seconds: float  # the sampled time: from entering the sampler to leaving it, less the pauses
    mean_mw: float
    peak_mw: float

    @property
    def energy_mj(self) -> float:
        return self.mean_mw * self.seconds

    def energy_mj_per_image(self, images: int) -> float | None:
        return self.energy_mj / images if images > 0 else None

    def figures(self, images: int) -> dict[str, object]:
        """The benchmark's power figures (the fields of ``shared.protocol.PowerStats``) for ``images``
        inferred in the sampled time."""
        return {
            "source": self.source,
            "total_of": self.total_of,
            "samples": self.samples,
            "seconds": self.seconds,
            "mean_mw": self.mean_mw,
            "peak_mw": self.peak_mw,
            "energy_mj": self.energy_mj,
            "energy_mj_per_image": self.energy_mj_per_image(images),
        }


class PowerSampler:
    """Samples the board's total power between ``__enter__`` and ``__exit__`` (less ``paused()`` parts).

    With no ``stream`` it opens the best source there is (jtop, else tegrastats) and stops it on exit;
    where there is none it is inactive and ``reading()`` is None. A given stream is the caller's to stop.
    """

    def __init__(
        self,
        stream: SampleStream | None = None,
        interval_ms: int = 100,
        first_sample_timeout: float = 3.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._stream = stream
        self._owned = stream is None
        self._interval_ms = interval_ms
        self._first_timeout = first_sample_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._values: list[float] = []
        self._source: SourceName | None = None
        self._total_of: str | None = None
        self._seconds = 0.0
        self._since: float | None = None  # when the current (un-paused) part began; None: not recording

    @property
    def active(self) -> bool:
        return self._stream is not None

    def __enter__(self) -> PowerSampler:
        if self._stream is None and self._owned:
            self._stream = sources.open_stream(self._interval_ms)
        stream = self._stream
        if stream is None:
            return self
        # a source that says nothing (a tegrastats that cannot read its sensors) is no source
        if stream.latest() is None and stream.wait_sample(self._first_timeout) is None:
            log.warning("%s gave no sample within %.1f s: no power figures", stream.source, self._first_timeout)
            self._close_stream()
            return self
        stream.subscribe(self._on_sample)
        self._resume()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pause()
        if self._stream is not None:
            self._stream.unsubscribe(self._on_sample)
            self._close_stream()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave what runs inside out of the figures."""
        self._pause()
        try:
            yield
        finally:
            if self._stream is not None:
                self._resume()

    def reading(self) -> PowerReading | None:
        with self._lock:
            if not self._values or self._source is None or self._total_of is None:
                return None
            return PowerReading(
                source=self._source,
                total_of=self._total_of,
                samples=len(self._values),
                seconds=self._seconds,
                mean_mw=sum(self._values) / len(self._values),
                peak_mw=max(self._values),
            )

    def _on_sample(self, sample: Sample) -> None:
        if sample.power_total_mw is None:
            return
        with self._lock:
            if self._since is None:
                return  # paused
            self._values.append(sample.power_total_mw)
            self._source = sample.source
            self._total_of = sample.power_total_of

    def _resume(self) -> None:
        with self._lock:
            self._since = self._clock()

    def _pause(self) -> None:
        with self._lock:
            if self._since is not None:
                self._seconds += self._clock() - self._since
                self._since = None

    def _close_stream(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.stop()
        self._stream = None
