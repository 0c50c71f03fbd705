"""Live serving telemetry: request counts, errors by kind, latency histograms, batch sizes, queue depth.

Latency percentiles come from sketches (``device.engine.histogram``), never from a list of every
sample. Two views share the recording:

* a sliding window (``window_s``, default 60 s, in 1 s slices) for ``GET /v1/stats``;
* an interval that ``take_interval()`` closes and restarts, for each ``TelemetryReport``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from device.engine.histogram import HIGHEST_US, LOWEST_US, LatencyHistogram, new_histogram, percentiles_ms

__all__ = ["LatencyHistogram", "ServingStats", "new_histogram", "percentiles_ms"]


@dataclass
class _Slice:
    start: float
    latency: LatencyHistogram = field(default_factory=new_histogram)
    requests: int = 0
    errors: int = 0


@dataclass
class Interval:
    """Everything recorded between two ``take_interval()`` calls."""

    start: float
    latency: LatencyHistogram = field(default_factory=new_histogram)
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    batched_images: int = 0
    queue_depth_sum: int = 0
    queue_depth_max: int = 0

    def seconds(self, now: float) -> float:
        return max(1e-9, now - self.start)

    @property
    def mean_batch(self) -> float:
        return self.batched_images / self.batches if self.batches else 0.0

    @property
    def mean_queue_depth(self) -> float:
        return self.queue_depth_sum / self.batches if self.batches else 0.0


class ServingStats:
    def __init__(
        self,
        window_s: float = 60.0,
        slice_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        self.window_s, self.slice_s = window_s, slice_s
        self.enabled = enabled  # off: nothing is recorded (the overhead benchmark's baseline)
        self.batches = self.batched_images = 0
        self.inference_s = 0.0
        self._now = clock
        self._lock = threading.Lock()
        self._slices: deque[_Slice] = deque()
        self.started = self._now()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self._interval = Interval(self.started)

    # -- recording (batcher thread, event loop) --------------------------------------------------
    def _slice(self, now: float) -> _Slice:
        if not self._slices or now - self._slices[-1].start >= self.slice_s:
            self._slices.append(_Slice(now))
        while self._slices and now - self._slices[0].start > self.window_s + self.slice_s:
            self._slices.popleft()
        return self._slices[-1]

    def record_request(self, latency_ms: float) -> None:
        if not self.enabled:
            return
        us = min(HIGHEST_US, max(LOWEST_US, round(latency_ms * 1e3)))
        with self._lock:
            s = self._slice(self._now())
            s.latency.record_value(us)
            s.requests += 1
            self._interval.latency.record_value(us)
            self._interval.requests += 1
            self.requests += 1

    def record_error(self, kind: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._slice(self._now()).errors += 1
            self._interval.errors[kind] += 1
            self.errors[kind] += 1

    def record_batch(self, size: int, queue_depth: int, inference_s: float = 0.0) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.batches += 1
            self.batched_images += size
            self.inference_s += inference_s
            iv = self._interval
            iv.batches += 1
            iv.batched_images += size
            iv.queue_depth_sum += queue_depth
            iv.queue_depth_max = max(iv.queue_depth_max, queue_depth)

    # -- reading ---------------------------------------------------------------------------------
    def window(self) -> dict[str, object]:
        """The sliding window: requests, errors, latency percentiles and throughput."""
        now = self._now()
        merged = new_histogram()
        with self._lock:
            self._slice(now)
            live = [s for s in self._slices if now - s.start <= self.window_s]
            for s in live:
                merged.add(s.latency)
            requests, errors = sum(s.requests for s in live), sum(s.errors for s in live)
            span = min(self.window_s, now - self.started) if live else 0.0
        return {
            "window_s": round(span, 3),
            "requests": requests,
            "errors": errors,
            "latency_ms": percentiles_ms(merged),
            "throughput_ips": requests / span if span > 0 else 0.0,
        }

    def take_interval(self) -> tuple[Interval, float]:
        """Close the current interval and start the next; returns it with its length in seconds."""
        now = self._now()
        with self._lock:
            done, self._interval = self._interval, Interval(now)
        return done, done.seconds(now)
