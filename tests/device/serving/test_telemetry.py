from __future__ import annotations

import pytest

from device.serving.telemetry import ServingStats, new_histogram, percentiles_ms


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_percentiles_of_a_histogram() -> None:
    h = new_histogram()
    for ms in range(1, 101):
        h.record_value(ms * 1000)
    p = percentiles_ms(h)
    assert p["p50"] == pytest.approx(50, rel=0.01) and p["p99"] == pytest.approx(99, rel=0.01)
    assert p["max"] == pytest.approx(100, rel=0.01) and p["mean"] == pytest.approx(50.5, rel=0.01)
    assert percentiles_ms(new_histogram())["p99"] == 0.0


def test_histograms_of_slices_merge_into_the_whole() -> None:
    whole, a, b = new_histogram(), new_histogram(), new_histogram()
    for us in range(1, 20_001, 7):
        whole.record_value(us)
        (a if us % 2 else b).record_value(us)
    a.add(b)
    assert a.count == whole.count and percentiles_ms(a) == percentiles_ms(whole)
    assert a.max_us == 20_000 and percentiles_ms(a)["p99"] == pytest.approx(19.8, rel=0.005)


def test_window_forgets_old_slices() -> None:
    clock = Clock()
    s = ServingStats(window_s=10, slice_s=1, clock=clock)
    for _ in range(100):
        s.record_request(2.0)
    s.record_error("not_image")
    clock.t += 5
    w = s.window()
    assert w["requests"] == 100 and w["errors"] == 1
    assert w["throughput_ips"] == pytest.approx(100 / 5)
    clock.t += 20  # everything is older than the window now
    w = s.window()
    assert w["requests"] == 0 and w["errors"] == 0
    assert s.requests == 100 and s.errors["not_image"] == 1  # totals keep everything


def test_interval_restarts_when_taken() -> None:
    clock = Clock()
    s = ServingStats(clock=clock)
    s.record_batch(8, queue_depth=3)
    s.record_batch(4, queue_depth=1)
    for ms in (1.0, 2.0, 3.0):
        s.record_request(ms)
    s.record_error("overloaded")
    clock.t += 30
    iv, seconds = s.take_interval()
    assert seconds == pytest.approx(30)
    assert iv.requests == 3 and iv.errors == {"overloaded": 1}
    assert iv.mean_batch == 6 and iv.mean_queue_depth == 2 and iv.queue_depth_max == 3
    iv2, _ = s.take_interval()
    assert iv2.requests == 0 and iv2.batches == 0
