from __future__ import annotations

from pathlib import Path

import pytest

from device.engine import sysinfo
from tests.device.engine.jetson.fakes import first_on_path, install_jtop, install_tegrastats, no_jtop, write_script
from tests.device.engine.jetson.test_clocks import ORIN_NANO_SUPER_NVPMODEL
from tests.device.engine.jetson.test_tegrastats import ORIN_NX_JP6


def test_absent_sources_are_none_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats, nvpmodel or jetson_clocks
    no_jtop(monkeypatch)
    info = sysinfo.collect(jetson=True)
    assert info.cpu_percent is not None and info.ram_total_mb and info.ram_total_mb > 0
    assert info.gpu_load_percent is None and info.power_mw is None and info.power_total_mw is None
    assert info.emc_load_percent is None and info.gpu_freq_mhz is None
    assert info.clocks_locked is None and info.nvpmodel is None
    assert info.sources == ("psutil",)


def test_a_jetson_with_tegrastats_and_nvpmodel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_jtop(monkeypatch)
    install_tegrastats(tmp_path, monkeypatch, [ORIN_NX_JP6])
    write_script(tmp_path / "bin", "nvpmodel", f"#!/bin/sh\nprintf '{ORIN_NANO_SUPER_NVPMODEL}'\n")
    info = sysinfo.collect()  # found to be a Jetson: tegrastats is on PATH
    assert info.sources == ("psutil", "tegrastats", "nvpmodel")
    assert (info.gpu_load_percent, info.gpu_freq_mhz, info.emc_load_percent, info.emc_freq_mhz) == (
        84.0, 713.0, 18.0, 3199.0
    )  # fmt: skip
    assert info.power_mw == {"VDD_IN": 17946.0, "VDD_CPU_GPU_CV": 8896.0, "VDD_SOC": 3923.0}
    assert info.power_total_mw == 17946.0
    assert info.temperatures_c is not None and info.temperatures_c["tj"] == 65.562
    assert (info.nvpmodel, info.clocks_locked) == ("MAXN_SUPER", None)  # jetson_clocks --show: not installed


def test_a_jetson_with_jtop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_on_path(monkeypatch, tmp_path / "bin")
    install_jtop(monkeypatch)
    info = sysinfo.collect(jetson=True)
    assert info.sources == ("psutil", "jtop")  # jtop also gave the mode and the clocks
    assert (info.nvpmodel, info.clocks_locked, info.power_total_mw, info.emc_freq_mhz) == ("25W", False, 5133.0, 2133.0)
