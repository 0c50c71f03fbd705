"""Latency histograms for served requests and load tests: DDSketch (``ddsketch``, pure Python: it installs
from a wheel on the aarch64 devices, where ``hdrhistogram`` needs a C compiler that L4T runtime images lack).
A sketch is a few KB however many requests it has seen, every quantile is within 0.5% of the true value,
and sketches of consecutive time slices merge exactly.
"""

from __future__ import annotations

from ddsketch import DDSketch

# microseconds, 1 us .. 10 min; every quantile within 0.5% of the true one
LOWEST_US, HIGHEST_US, _RELATIVE_ACCURACY = 1, 600_000_000, 0.005


class LatencyHistogram:
    """Latencies in microseconds: a DDSketch plus the exact count and maximum."""

    __slots__ = ("_max", "_sketch")

    def __init__(self) -> None:
        self._sketch = DDSketch(_RELATIVE_ACCURACY)
        self._max = 0

    def record_value(self, us: int) -> None:
        self._sketch.add(us)
        self._max = max(self._max, us)

    def add(self, other: LatencyHistogram) -> None:
        """Merge ``other`` into this one (exact: the same bucket mapping)."""
        self._sketch.merge(other._sketch)
        self._max = max(self._max, other._max)

    @property
    def count(self) -> int:
        return int(self._sketch.count)

    def quantile_us(self, q: float) -> float:
        return min(float(self._max), float(self._sketch.get_quantile_value(q) or 0.0))

    @property
    def max_us(self) -> int:
        return self._max

    @property
    def mean_us(self) -> float:
        return float(self._sketch.avg)


def new_histogram() -> LatencyHistogram:
    return LatencyHistogram()


def percentiles_ms(h: LatencyHistogram) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of a histogram of microseconds (zeros when empty)."""
    if h.count == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "p50": h.quantile_us(0.50) / 1e3,
        "p90": h.quantile_us(0.90) / 1e3,
        "p99": h.quantile_us(0.99) / 1e3,
        "max": h.max_us / 1e3,
        "mean": h.mean_us / 1e3,
    }
