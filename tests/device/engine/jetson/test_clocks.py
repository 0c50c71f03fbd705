"""nvpmodel mode and jetson_clocks state, from the tools' real output (each cited)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.engine.jetson import clocks
from tests.device.engine.jetson.fakes import first_on_path, write_script

# `nvpmodel -q` on a Jetson Nano without sudo: the mode, then errors (and a non-zero exit).
# Source: https://github.com/NVIDIA-AI-IOT/jetbot/issues/49
NANO_NVPMODEL = "NV Power Mode: 5W\n1\nNVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13\n"
# `nvpmodel -q` on Jetson Thor (JetPack 7). Source: https://github.com/anduril/jetpack-nixos/pull/460
THOR_NVPMODEL = "NV Power Mode: MAXN\n0\n"
# Orin Nano Super, R36.4.4. Source: https://github.com/AbuAyah110/jetbot-orin-super/issues/1
ORIN_NANO_SUPER_NVPMODEL = "NV Power Mode: MAXN_SUPER\n2\n"

# `jetson_clocks --show` on an AGX Orin dev kit, JetPack 5.0 pre-DP (first CPU lines; clocks not pinned).
# Source: https://github.com/rbonghi/jetson_stats/issues/381
AGX_ORIN_SHOW = (
    "SOC family:tegra234  Machine:NVIDIA Orin Jetson-Small Developer Kit\n"
    "Online CPUs: 0-11\n"
    "cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2112000 IdleStates: WFI=1 c7=1 \n"
    "cpu1: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1 c7=1 \n"
    "cpu10: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1 c7=1 \n"
)
# Orin NX: two spaces after "cpu0:". Source: https://github.com/open-rdc/orne-box/issues/121
ORIN_NX_CPU0 = (
    "cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1728000 IdleStates: WFI=1 c7=1 \n"
)


def _pinned(emc_current: int = 3199000000) -> str:
    """Made up here: the shape of a pinned board's `--show` (CPU lines as above; the GPU and EMC lines in
    the format of the jetson_stats emulator, tests/jetson_clocks), and a CPU that is offline."""
    return (
        "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0\n"
        "cpu1: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=115200 IdleStates: WFI=1\n"
        "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n"
        f"EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq={emc_current} FreqOverride=1\n"
        "NV Power Mode: MAXN\n"
    )


def test_nvpmodel_names() -> None:
    assert clocks.parse_nvpmodel(NANO_NVPMODEL) == "5W"
    assert clocks.parse_nvpmodel(THOR_NVPMODEL) == "MAXN"
    assert clocks.parse_nvpmodel(ORIN_NANO_SUPER_NVPMODEL) == "MAXN_SUPER"
    assert clocks.parse_nvpmodel("NVPM ERROR: Error opening /etc/nvpmodel.conf") is None


def test_jetson_clocks_state() -> None:
    assert clocks.parse_jetson_clocks(AGX_ORIN_SHOW) is False  # MinFreq 115200 < MaxFreq 2201600
    assert clocks.parse_jetson_clocks(ORIN_NX_CPU0) is False
    assert clocks.parse_jetson_clocks(_pinned()) is True  # the offline cpu1 does not count
    assert clocks.parse_jetson_clocks(_pinned(emc_current=2133000000)) is False  # EMC below its maximum
    assert clocks.parse_jetson_clocks("jetson_clocks: ERROR: You must be root to run this script\n") is None


def test_the_tools_are_run_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    first_on_path(monkeypatch, bindir)
    assert clocks.nvpmodel_mode() is None and clocks.jetson_clocks_active() is None  # not installed
    # without root nvpmodel prints the mode, then fails: the mode still counts
    write_script(bindir, "nvpmodel", f"#!/bin/sh\nprintf '{NANO_NVPMODEL}'\nexit 255\n")
    write_script(bindir, "jetson_clocks", f"#!/bin/sh\ncat <<'EOF'\n{AGX_ORIN_SHOW}EOF\n")
    assert clocks.nvpmodel_mode() == "5W"
    assert clocks.jetson_clocks_active() is False
