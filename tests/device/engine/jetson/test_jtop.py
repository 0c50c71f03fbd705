"""jetson-stats (jtop) as a source, with a ``jtop`` module injected into sys.modules
(tests/device/engine/jetson/fakes.py)."""

from __future__ import annotations

import pytest

from device.engine.jetson.jtop import JtopStream, JtopUnavailableError, jtop_class, sample_from_jtop
from tests.device.engine.jetson.fakes import install_jtop, no_jtop


def test_a_sample_from_what_jtop_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    client = install_jtop(monkeypatch)()
    s = sample_from_jtop(client)
    assert s.source == "jtop"
    assert s.rails_mw == {"VDD_CPU_GPU_CV": 1064.0, "VDD_SOC": 1540.0}
    assert s.rails_avg_mw == {"VDD_CPU_GPU_CV": 806.0, "VDD_SOC": 1524.0}
    assert (s.power_total_mw, s.power_total_of) == (5133.0, "VDD_IN")
    online = {"cpu": 46.062, "gpu": 46.406, "soc0": 45.875, "soc1": 47.906, "soc2": 45.25, "tj": 47.906}
    assert s.temperatures_c == online  # cv0-2 are offline (-256)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (4.8, 306.0)  # kHz -> MHz
    assert (s.emc_load_percent, s.emc_freq_mhz) == (0.0, 2133.0)
    assert s.ram_used_mb == pytest.approx(1687344 / 1024) and s.swap_used_mb == 0.0
    assert (s.nvpmodel, s.jetson_clocks) == ("25W", False)


def test_without_a_named_total_the_rails_are_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    client = install_jtop(monkeypatch)()
    client.power = {"rail": client.power["rail"], "tot": {"power": 2604, "online": True}}  # AGX: no input rail
    summed = sample_from_jtop(client)
    assert (summed.power_total_mw, summed.power_total_of) == (2604.0, "sum")
    client.power, client.nvpmodel, client.jetson_clocks = {}, None, None  # a board without them
    s = sample_from_jtop(client)
    assert (s.power_total_mw, s.rails_mw, s.nvpmodel, s.jetson_clocks) == (None, {}, None, None)


def test_the_stream_hands_on_updates_and_closes_its_client(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = install_jtop(monkeypatch)
    with JtopStream(interval_ms=20) as stream:
        assert stream.latest() is not None  # jtop's start hands over the first update
        sample = stream.wait_sample(timeout=5)
        assert sample is not None and sample.power_total_mw == 5133.0
    (client,) = cls.clients
    assert client.closed.is_set() and not client.observers and not client.is_alive()
    assert client.interval == pytest.approx(0.02)


def test_jtop_not_installed_or_not_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    no_jtop(monkeypatch)
    assert jtop_class() is None
    with pytest.raises(JtopUnavailableError, match="jetson-stats is not installed"):
        JtopStream().start()
    install_jtop(monkeypatch, answers=False)
    with pytest.raises(JtopUnavailableError, match="did not answer"):
        JtopStream().start()
