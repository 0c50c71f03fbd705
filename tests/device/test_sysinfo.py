from __future__ import annotations

import pytest

from device import sysinfo

ORIN = (
    "11-25-2026 10:00:00 RAM 2448/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 37% cpu@45.5C soc2@44.218C soc0@45.218C gpu@44C tj@46.5C soc1@44.5C "
    "VDD_IN 4763mW/4763mW VDD_CPU_GPU_CV 555mW/555mW VDD_SOC 1388mW/1388mW"
)
NANO = (
    "RAM 1900/3964MB (lfb 5x2MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [12%@1479,5%@1479,"
    "9%@1479,6%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@30C CPU@33.5C PMIC@100C GPU@31C "
    "AO@38.5C thermal@32.25C POM_5V_IN 2557/2557 POM_5V_GPU 0/0 POM_5V_CPU 489/489"
)


def test_parse_orin_line() -> None:
    t = sysinfo.parse_tegrastats(ORIN)
    assert t.gpu_load_percent == 37.0
    assert (t.ram_used_mb, t.ram_total_mb) == (2448.0, 7620.0)
    assert t.temperatures_c["gpu"] == 44.0 and t.temperatures_c["tj"] == 46.5
    assert t.power_mw == {"VDD_IN": 4763.0, "VDD_CPU_GPU_CV": 555.0, "VDD_SOC": 1388.0}


def test_parse_nano_line_and_off_sensors() -> None:
    t = sysinfo.parse_tegrastats(NANO + " Tdiode@-256C")
    assert t.gpu_load_percent == 0.0
    assert t.temperatures_c["gpu"] == 31.0 and "tdiode" not in t.temperatures_c


def test_absent_sources_are_none_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysinfo.shutil, "which", lambda name: None)
    info = sysinfo.collect(jetson=True)
    assert info.cpu_percent is not None and info.ram_total_mb and info.ram_total_mb > 0
    assert info.gpu_load_percent is None and info.power_mw is None
    assert info.clocks_locked is None and info.nvpmodel is None
    assert info.sources == ("psutil",)
