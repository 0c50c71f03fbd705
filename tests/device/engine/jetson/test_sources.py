"""Which source is read: jtop when it answers, tegrastats otherwise, none off a Jetson."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.engine.jetson import sources
from device.engine.jetson.tegrastats import parse_line
from tests.device.engine.jetson.fakes import install_jtop, install_tegrastats, no_jtop
from tests.device.engine.jetson.test_tegrastats import XAVIER_NX_JP512


def test_jtop_is_preferred_when_it_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_tegrastats(tmp_path, monkeypatch, [XAVIER_NX_JP512])
    install_jtop(monkeypatch)
    stream = sources.open_stream(interval_ms=20)
    assert stream is not None and stream.source == "jtop"
    stream.stop()
    sample = sources.read_sample()
    assert sample is not None and sample.source == "jtop" and sample.nvpmodel == "25W"


def test_tegrastats_when_jtop_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_tegrastats(tmp_path, monkeypatch, [XAVIER_NX_JP512])
    install_jtop(monkeypatch, answers=False)
    assert sources.read_sample(timeout=10) == parse_line(XAVIER_NX_JP512)


def test_no_source_off_a_jetson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    no_jtop(monkeypatch)
    assert sources.open_stream() is None and sources.read_sample() is None
