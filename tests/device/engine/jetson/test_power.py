"""PowerSampler: mean and peak power and energy over a run, from real tegrastats lines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.engine.jetson.power import PowerSampler
from device.engine.jetson.sample import Sample, SampleStream
from device.engine.jetson.tegrastats import TegrastatsStream, parse_line
from tests.device.engine.jetson.fakes import alive, install_tegrastats, no_jtop, wait_gone
from tests.device.engine.jetson.test_tegrastats import TX2_JP4, TX2_JP4_NONROOT

# Jetson TX2 before JetPack 4 (probably L4T R28), root: VDD_IN 1931/1931 and the old rail names.
# Source: https://github.com/gustavz/realtime_object_detection/issues/24
TX2_R28 = (
    "RAM 1685/7854MB (lfb 1044x4MB) SWAP 278/8192MB (cached 23MB) CPU [0%@1303,0%@345,0%@345,0%@1419,0%@1420,0%@1421] "
    "EMC_FREQ 0%@1866 GR3D_FREQ 0%@140 APE 150 MTS fg 1% bg 8% BCPU@41C MCPU@41C GPU@39C PLL@41C Tboard@37C "
    "Tdiode@37.25C PMIC@100C thermal@39.9C VDD_IN 1931/1931 VDD_CPU 231/231 VDD_GPU 154/154 VDD_SOC 385/385 "
    "VDD_WIFI 38/38 VDD_DDR 326/326"
)
# A 6-core TX2-family board, JetPack 4.6, without root: a line with no power rails at all.
# Source: https://github.com/rbonghi/jetson_stats/issues/187
NO_RAILS = (
    "RAM 1689/3825MB (lfb 339x4MB) SWAP 0/1913MB (cached 0MB) CPU [3%@345,off,off,0%@345,1%@345,1%@345] "
    "EMC_FREQ 0% GR3D_FREQ 0% PLL@50.5C MCPU@50.5C PMIC@50C GPU@50C BCPU@50.5C thermal@50.3C"
)


def _clock(*times: float) -> Iterator[float]:
    return iter(times)


def test_mean_peak_and_energy_from_the_lines_printed_during_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake prints NO_RAILS, then the three TX2 lines 150 ms apart, then nothing."""
    install_tegrastats(tmp_path, monkeypatch, [NO_RAILS, TX2_JP4, TX2_JP4_NONROOT, TX2_R28], repeat=False)
    last = threading.Event()

    def on_sample(sample: Sample) -> None:
        if sample.power_total_mw == 1931.0:  # TX2_R28, the last line
            last.set()

    times = _clock(100.0, 102.0)  # entering and leaving the sampler: 2 s sampled
    with TegrastatsStream(interval_ms=150) as stream:
        stream.subscribe(on_sample)
        assert stream.wait_sample(timeout=10) == parse_line(NO_RAILS)  # the source is live before the run
        with PowerSampler(stream, clock=lambda: next(times)) as power:
            assert last.wait(timeout=10)
    reading = power.reading()
    assert reading is not None
    assert (reading.source, reading.total_of, reading.samples) == ("tegrastats", "VDD_IN", 3)
    assert reading.mean_mw == pytest.approx((3056 + 3140 + 1931) / 3)  # 2709 mW
    assert reading.peak_mw == 3140.0
    assert reading.seconds == 2.0 and reading.energy_mj == pytest.approx(2709.0 * 2.0)
    assert reading.energy_mj_per_image(1000) == pytest.approx(5.418)
    figures = reading.figures(1000)
    assert figures["energy_mj_per_image"] == pytest.approx(5.418) and figures["samples"] == 3


class _ManualStream(SampleStream):
    """Samples handed in by the test (the sampler's arithmetic, without a process)."""

    source = "tegrastats"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def push(self, mw: float | None) -> None:
        self._publish(Sample(source="tegrastats", power_total_mw=mw, power_total_of="VDD_IN"))


def test_paused_parts_are_left_out_of_samples_and_time() -> None:
    stream = _ManualStream()
    stream.push(1000.0)  # before the run
    times = _clock(0.0, 1.0, 4.0, 5.5)  # run 1 s, paused 3 s, run 1.5 s
    with PowerSampler(stream, clock=lambda: next(times)) as power:
        stream.push(4000.0)
        with power.paused():
            stream.push(9000.0)  # during an evaluation: not counted
        stream.push(6000.0)
        stream.push(None)  # a line without rails: not a sample
    stream.push(8000.0)  # after the run
    reading = power.reading()
    assert reading is not None
    assert (reading.samples, reading.mean_mw, reading.peak_mw, reading.seconds) == (2, 5000.0, 6000.0, 2.5)
    assert reading.energy_mj == 12500.0 and reading.energy_mj_per_image(0) is None


def test_off_a_jetson_the_sampler_is_inactive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats
    no_jtop(monkeypatch)
    with PowerSampler() as power:
        assert not power.active
    assert power.reading() is None


def test_the_sampler_opens_the_source_itself_and_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_jtop(monkeypatch)
    fake = install_tegrastats(tmp_path, monkeypatch, [TX2_JP4])
    got = threading.Event()
    with PowerSampler(interval_ms=50) as power:
        assert power.active
        pids = fake.pids()
        power._stream.subscribe(lambda s: got.set())  # type: ignore[union-attr]
        assert got.wait(timeout=10) and all(alive(p) for p in pids)
    assert wait_gone(pids, timeout=1.0)
    reading = power.reading()
    assert reading is not None and reading.mean_mw == reading.peak_mw == 3056.0


def test_a_source_that_prints_nothing_gives_no_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_jtop(monkeypatch)
    fake = install_tegrastats(tmp_path, monkeypatch, [""])  # blank lines only
    with PowerSampler(interval_ms=50, first_sample_timeout=0.5) as power:
        assert not power.active
    assert power.reading() is None and wait_gone(fake.pids(), timeout=1.0)
