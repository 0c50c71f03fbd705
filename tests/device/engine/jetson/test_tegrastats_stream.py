"""The long-lived ``tegrastats`` reader against a real process: a fake ``tegrastats`` first on PATH that
prints real lines on an interval (tests/device/engine/jetson/fakes.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from device.engine.jetson.sample import Sample
from device.engine.jetson.tegrastats import TegrastatsStream, parse_line
from tests.device.engine.jetson.fakes import alive, install_tegrastats, wait_gone
from tests.device.engine.jetson.test_tegrastats import ORIN_NX_JP6, XAVIER_NX_JP512


def test_the_stream_parses_each_line_of_one_process_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install_tegrastats(tmp_path, monkeypatch, [XAVIER_NX_JP512, ORIN_NX_JP6])
    seen: list[Sample] = []
    stream = TegrastatsStream(interval_ms=50)
    stream.subscribe(seen.append)
    with stream:
        first = stream.wait_sample(timeout=10)
        second = stream.wait_sample(timeout=10)
        pid = stream.pid
        assert pid is not None and fake.pids() == [pid] and alive(pid)
    assert first is not None and second is not None
    assert {first.power_total_mw, second.power_total_mw} == {2763.0, 17946.0}
    assert first in (parse_line(XAVIER_NX_JP512), parse_line(ORIN_NX_JP6))
    assert len(seen) >= 2 and seen[0] == parse_line(XAVIER_NX_JP512)  # every line, in order
    assert not alive(pid) and stream.pid is None  # stopped and reaped on exit
    stream.stop()  # a second stop is harmless


def test_stop_never_hangs_on_a_tool_that_ignores_sigterm_and_a_child_holding_the_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install_tegrastats(tmp_path, monkeypatch, [XAVIER_NX_JP512], stubborn=True)
    stream = TegrastatsStream(interval_ms=50)
    stream.start()
    assert stream.wait_sample(timeout=10) is not None
    pids = fake.pids()
    readers = [t for t in threading.enumerate() if t.name == "tegrastats"]
    t0 = time.monotonic()
    stream.stop(timeout=1.0)
    assert time.monotonic() - t0 < 5.0
    assert wait_gone(pids), f"left running: {[p for p in pids if alive(p)]}"
    assert readers and not any(t.is_alive() for t in readers)


def test_a_subscriber_that_raises_does_not_end_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_tegrastats(tmp_path, monkeypatch, [XAVIER_NX_JP512])

    def broken(sample: Sample) -> None:
        raise RuntimeError("a subscriber bug")

    with TegrastatsStream(interval_ms=50) as stream:
        stream.subscribe(broken)
        assert stream.wait_sample(timeout=10) is not None
        assert stream.wait_sample(timeout=10) is not None  # still reading


def test_a_missing_tegrastats_is_an_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OSError, match="tegrastats"):
        TegrastatsStream().start()
    with pytest.raises(ValueError, match="interval"):
        TegrastatsStream(interval_ms=0)
