"""The tegrastats parser over real lines of JetPack 4, 5, 6 and 7 (each cited where it was copied from)."""

from __future__ import annotations

import pytest

from device.engine.jetson.tegrastats import parse_line

# Jetson Nano, JetPack 4.6.1, root. Source: waggle-sensor/jetson-exporter
# pkg/tegrastats/tegrastats_test.go@3e882702056a943296614994df245e2c63c637de (TestParseTegraStatsXavierNanoJetPack461)
NANO_JP461 = (
    "RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB) CPU "
    "[5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C CPU@40C PMIC@50C "
    "GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406"
)

# Jetson TX2, JetPack 4 rail names (VDD_SYS_*), root, two cores off. Source: DataDog/datadog-agent
# pkg/collector/corechecks/nvidia/jetson/jetson_test.go@020f92f4a5f629e0838d2f460c371f3e455628cf (tx2Sample)
TX2_JP4 = (
    "RAM 2344/7852MB (lfb 1154x4MB) SWAP 0/3926MB (cached 0MB) CPU [1%@345,off,off,1%@345,0%@345,2%@345] "
    "EMC_FREQ 4%@1600 GR3D_FREQ 0%@624 APE 150 PLL@37.5C MCPU@37.5C PMIC@100C Tboard@32C GPU@35C "
    "BCPU@37.5C thermal@36.5C Tdiode@34.25C VDD_SYS_GPU 152/152 VDD_SYS_SOC 687/687 VDD_4V0_WIFI 0/0 "
    "VDD_IN 3056/3056 VDD_SYS_CPU 152/152 VDD_SYS_DDR 883/883"
)

# Jetson TX2, JetPack 4 (2019), without root: "EMC_FREQ 0%" and "GR3D_FREQ 0%" carry no frequency.
# Source: https://github.com/FindHao/tx-utils/issues/3
TX2_JP4_NONROOT = (
    "RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] EMC_FREQ 0% "
    "GR3D_FREQ 0% PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C thermal@41.9C "
    "Tdiode@41.25C VDD_SYS_GPU 153/158 VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 VDD_IN 3140/3208 "
    "VDD_SYS_CPU 536/590 VDD_SYS_DDR 557/601"
)

# Jetson AGX Xavier, JetPack 4.2, without root; no input rail (GPU CPU SOC CV VDDRQ SYS5V).
# Source: https://github.com/martinkersner/gtop/pull/7
AGX_XAVIER_JP42_NONROOT = (
    "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU "
    "[0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C "
    "GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 "
    "SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"
)

# Jetson AGX Xavier 32GB, JetPack 4 (unitless rails), root. Source: DataDog/datadog-agent
# pkg/collector/corechecks/nvidia/jetson/jetson_test.go@020f92f4a5f629e0838d2f460c371f3e455628cf (agXSample)
AGX_XAVIER_JP4 = (
    "RAM 721/31927MB (lfb 7291x4MB) SWAP 0/15963MB (cached 0MB) CPU "
    "[2%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@665 GR3D_FREQ 0%@318 APE 150 MTS fg "
    "0% bg 0% AO@37.5C GPU@37.5C Tdiode@40C PMIC@100C AUX@36C CPU@37.5C thermal@36.9C Tboard@37C GPU 0/0 "
    "CPU 311/311 SOC 932/932 CV 0/0 VDDRQ 621/621 SYS5V 1482/1482"
)

# Jetson Xavier NX, JetPack 5.1.2, root: timestamp prefix, mW rails, GR3D_FREQ 0%@[114]. Source:
# waggle-sensor/jetson-exporter pkg/tegrastats/tegrastats_test.go@3e882702056a943296614994df245e2c63c637de
XAVIER_NX_JP512 = (
    "07-09-2024 13:31:31 RAM 3168/6851MB (lfb 2x4MB) SWAP 161/3426MB (cached 0MB) CPU "
    "[23%@1397,17%@1192,16%@1190,13%@1190,23%@1190,10%@1190] EMC_FREQ 2%@204 GR3D_FREQ 0%@[114] VIC_FREQ "
    "115 APE 150 AUX@45C CPU@46.5C thermal@45.6C AO@45C GPU@45.5C PMIC@50C VDD_IN 2763mW/2846mW "
    "VDD_CPU_GPU_CV 650mW/670mW VDD_SOC 650mW/711mW"
)

# Jetson Orin NX 16GB, JetPack 5 (upper-case temperatures), root. Source: DataDog/datadog-agent
# pkg/collector/corechecks/nvidia/jetson/jetson_test.go@020f92f4a5f629e0838d2f460c371f3e455628cf (voltageUnitSample)
ORIN_NX_JP5 = (
    "RAM 6334/15388MB (lfb 1770x4MB) SWAP 491/7694MB (cached 0MB) CPU "
    "[6%@729,9%@729,5%@729,16%@729,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@611 VIC_FREQ 729 APE "
    "174 CV0@45.812C CPU@47.937C SOC2@46.093C SOC0@46.968C CV1@46.406C GPU@45.875C tj@48.875C "
    "SOC1@48.875C CV2@45.75C VDD_IN 5299mW/5299mW VDD_CPU_GPU_CV 773mW/773mW VDD_SOC 1424mW/1424mW"
)

# Jetson AGX Orin 64GB, L4T R35 format, root: offline sensors at -256C, unconnected NC rails, two GPCs.
# Source: https://github.com/GDWR/jetson_exporter/issues/14
AGX_ORIN_JP5 = (
    "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU "
    "[0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ "
    "0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C "
    "Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C VDD_GPU_SOC "
    "2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO "
    "301mW/301mW NC 0mW/0mW"
)

# Jetson AGX Orin 32GB, JetPack 6 (R36), root: runs of spaces, GR3D_FREQ 0%@[305,305]. Source:
# DataDog/datadog-agent pkg/collector/corechecks/nvidia/jetson/jetson_test.go@020f92f4a5f629e0838d2f460c371f3e455628cf
# (r36Sample)
AGX_ORIN_JP6 = (
    "RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) CPU "
    "[3%@729,4%@729,0%@729,1%@729,0%@2201,100%@2201,1%@2201,0%@2201,100%@2201,0%@2201,0%@2201,0%@2201] "
    "EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] NVENC      off  NVDEC    off NVJPG off NVJPG1    "
    "off         VIC        off          OFA           off          NVDLA0    off       NVDLA1     "
    "off          PVA0_FREQ off         APE           174        cpu@53.062C soc2@48.25C soc0@48.843C  "
    "gpu@47.812C tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW VDD_CPU_CV 4405mW/4405mW "
    "VIN_SYS_5V0 4767mW/4767mW"
)

# Jetson AGX Orin 64GB, JetPack 6, without root: no EMC_FREQ at all, "GR3D_FREQ 0%". Source:
# DataDog/datadog-agent pkg/collector/corechecks/nvidia/jetson/jetson_test.go@020f92f4a5f629e0838d2f460c371f3e455628cf
# (orinSample)
AGX_ORIN_JP6_NONROOT = (
    "RAM 2448/62840MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) CPU "
    "[0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201] "
    "GR3D_FREQ 0% cpu@42C soc2@37.843C soc0@39.187C gpu@37.75C tj@42C soc1@37.937C VDD_GPU_SOC "
    "4940mW/4940mW VDD_CPU_CV 988mW/988mW VIN_SYS_5V0 4442mW/4442mW"
)

# Jetson Orin NX 8GB, JetPack 6, under load, sudo. Source: https://github.com/rbonghi/jetson_stats/issues/624
ORIN_NX_JP6 = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) CPU "
    "[97%@1984,95%@1984,95%@1984,91%@1984,88%@1984,93%@247] EMC_FREQ 18%@3199 GR3D_FREQ 84%@[713] NVENC "
    "1%@115 NVDEC 40%@115 NVJPG off NVJPG1 off VIC 31%@115 OFA off NVDLA0 off PVA0_FREQ off APE 174 "
    "cv0@63.031C cpu@65.562C soc2@64.156C soc0@63.031C cv1@62.937C gpu@63.5C tj@65.562C soc1@64.718C "
    "cv2@60.875C VDD_IN 17946mW/15710mW VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW"
)

# Jetson AGX Orin, JetPack 7.2 (R39.2): three power values, two per temperature. Source: rbonghi/jetson_stats
# jtop/tests/test_06_tegra_parse.py@f41d5cadfeafc3516ff8cb7ddd5712cfa9a78611 (TEGRASTATS_ORIN_JP7)
AGX_ORIN_JP72 = (
    "07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) CPU "
    "[23%@2201,10%@2201,4%@2201,14%@2201,30%@2201,18%@2201,10%@2201,10%@2201,33%@2201,7%@2201,5%@2201,27%@2201] "
    "EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA "
    "off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.968C/52.968C soc2@48.406C/48.406C "
    "soc0@49.531C/49.531C gpu@47.625C/47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV "
    "3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW"
)


def test_jetpack4_nano_unitless_rails_are_milliwatts() -> None:
    s = parse_line(NANO_JP461)
    assert s.rails_mw == {"POM_5V_IN": 1750.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 366.0}
    assert s.rails_avg_mw == {"POM_5V_IN": 1628.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 406.0}
    assert (s.power_total_mw, s.power_total_of) == (1750.0, "POM_5V_IN")
    assert (s.emc_load_percent, s.emc_freq_mhz) == (0.0, 1600.0)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (0.0, 76.0)
    assert s.temperatures_c == {"pll": 37.0, "cpu": 40.0, "gpu": 40.0, "ao": 45.0, "thermal": 40.0}  # no PMIC
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (1923.0, 3964.0, 191.0, 1982.0)
    assert s.cpu_loads_percent == (5.0, 4.0, 3.0, 6.0)
    assert s.source == "tegrastats" and s.nvpmodel is None and s.jetson_clocks is None


def test_jetpack4_tx2_input_rail_and_cores_that_are_off() -> None:
    s = parse_line(TX2_JP4)
    assert (s.power_total_mw, s.power_total_of) == (3056.0, "VDD_IN")
    assert s.rails_mw["VDD_SYS_DDR"] == 883.0 and s.rails_mw["VDD_4V0_WIFI"] == 0.0 and len(s.rails_mw) == 6
    assert (s.emc_load_percent, s.emc_freq_mhz, s.gpu_freq_mhz) == (4.0, 1600.0, 624.0)
    assert s.cpu_loads_percent == (1.0, None, None, 1.0, 0.0, 2.0)
    assert s.temperatures_c["bcpu"] == 37.5 and s.temperatures_c["tdiode"] == 34.25 and "pmic" not in s.temperatures_c


def test_jetpack4_without_root_has_loads_but_no_frequencies() -> None:
    s = parse_line(TX2_JP4_NONROOT)
    assert (s.emc_load_percent, s.emc_freq_mhz) == (0.0, None)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (0.0, None)
    assert (s.power_total_mw, s.rails_avg_mw["VDD_IN"]) == (3140.0, 3208.0)
    assert s.rails_mw["VDD_4V0_WIFI"] == 633.0
    assert (s.swap_used_mb, s.swap_total_mb) == (None, None)  # no SWAP token: absent, not zero
    assert s.temperatures_c["thermal"] == 41.9


def test_jetpack4_agx_xavier_total_is_the_sum_of_its_rails() -> None:
    s = parse_line(AGX_XAVIER_JP42_NONROOT)
    assert s.rails_mw == {"GPU": 463.0, "CPU": 618.0, "SOC": 2936.0, "CV": 0.0, "VDDRQ": 309.0, "SYS5V": 3306.0}
    assert (s.power_total_mw, s.power_total_of) == (7632.0, "sum")
    assert s.cpu_loads_percent == (0.0,) * 8  # "CPU [..." is the load list, "CPU 618/618" the rail
    assert s.temperatures_c["aux"] == 30.5 and s.temperatures_c["cpu"] == 31.5
    root = parse_line(AGX_XAVIER_JP4)
    assert (root.power_total_mw, root.rails_mw["SOC"]) == (3346.0, 932.0)
    assert (root.emc_freq_mhz, root.gpu_freq_mhz) == (665.0, 318.0)
    assert root.cpu_loads_percent == (2.0, 0.0, 0.0, 0.0, None, None, None, None)


def test_jetpack5_xavier_nx_milliwatt_rails_and_bracketed_gpu_frequency() -> None:
    s = parse_line(XAVIER_NX_JP512)
    assert s.rails_mw == {"VDD_IN": 2763.0, "VDD_CPU_GPU_CV": 650.0, "VDD_SOC": 650.0}
    assert s.rails_avg_mw == {"VDD_IN": 2846.0, "VDD_CPU_GPU_CV": 670.0, "VDD_SOC": 711.0}
    assert (s.power_total_mw, s.power_total_of) == (2763.0, "VDD_IN")
    assert (s.emc_load_percent, s.emc_freq_mhz) == (2.0, 204.0)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (0.0, 114.0)
    assert s.temperatures_c == {"aux": 45.0, "cpu": 46.5, "thermal": 45.6, "ao": 45.0, "gpu": 45.5}
    assert (s.ram_used_mb, s.ram_total_mb) == (3168.0, 6851.0)  # the timestamp prefix is skipped


def test_jetpack5_orin_nx_and_agx_orin() -> None:
    nx = parse_line(ORIN_NX_JP5)
    assert (nx.power_total_mw, nx.rails_mw["VDD_SOC"]) == (5299.0, 1424.0)
    assert (nx.emc_freq_mhz, nx.gpu_freq_mhz) == (2133.0, 611.0)
    assert nx.temperatures_c["tj"] == 48.875 and nx.temperatures_c["cv0"] == 45.812
    agx = parse_line(AGX_ORIN_JP5)
    # NC (unconnected) channels are left out; VIN_SYS_5V0 is one rail of the sum, not the total
    assert agx.rails_mw == {"VDD_GPU_SOC": 2340.0, "VDD_CPU_CV": 390.0, "VIN_SYS_5V0": 4025.0, "VDDQ_VDD2_1V8AO": 301.0}
    assert (agx.power_total_mw, agx.power_total_of) == (7056.0, "sum")
    assert (agx.gpu_load_percent, agx.gpu_freq_mhz) == (0.0, 0.0)
    assert {"cv0", "cv1", "cv2", "gpu"}.isdisjoint(agx.temperatures_c)  # -256C: offline
    assert agx.temperatures_c["cpu"] == 44.562 and agx.temperatures_c["tj"] == 44.343


def test_jetpack6_agx_orin_per_gpc_frequencies_and_runs_of_spaces() -> None:
    s = parse_line(AGX_ORIN_JP6)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (0.0, 305.0)
    assert (s.emc_load_percent, s.emc_freq_mhz) == (1.0, 2133.0)
    assert s.rails_mw == {"VDD_GPU_SOC": 3205.0, "VDD_CPU_CV": 4405.0, "VIN_SYS_5V0": 4767.0}
    assert (s.power_total_mw, s.power_total_of) == (12377.0, "sum")
    assert s.temperatures_c == {
        "cpu": 53.062, "soc2": 48.25, "soc0": 48.843, "gpu": 47.812, "tj": 53.062, "soc1": 48.968
    }  # fmt: skip
    assert (s.swap_used_mb, s.swap_total_mb) == (4915.0, 15348.0)
    assert len(s.cpu_loads_percent) == 12 and s.cpu_loads_percent[5] == 100.0


def test_jetpack6_agx_orin_without_root_has_no_emc() -> None:
    s = parse_line(AGX_ORIN_JP6_NONROOT)
    assert (s.emc_load_percent, s.emc_freq_mhz) == (None, None)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (0.0, None)
    assert (s.power_total_mw, s.rails_mw["VDD_CPU_CV"]) == (10370.0, 988.0)
    assert s.temperatures_c["soc1"] == 37.937


def test_jetpack6_orin_nx_under_load() -> None:
    s = parse_line(ORIN_NX_JP6)
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (84.0, 713.0)
    assert (s.emc_load_percent, s.emc_freq_mhz) == (18.0, 3199.0)
    assert (s.power_total_mw, s.power_total_of, s.rails_avg_mw["VDD_IN"]) == (17946.0, "VDD_IN", 15710.0)
    assert s.rails_mw["VDD_CPU_GPU_CV"] == 8896.0
    assert s.temperatures_c["cpu"] == 65.562 and s.temperatures_c["cv2"] == 60.875
    assert s.cpu_loads_percent == (97.0, 95.0, 95.0, 91.0, 88.0, 93.0)


def test_jetpack7_three_power_values_and_two_temperatures() -> None:
    s = parse_line(AGX_ORIN_JP72)
    assert s.rails_mw == {"VDD_GPU_SOC": 5139.0, "VDD_CPU_CV": 3268.0, "VIN_SYS_5V0": 5500.0}
    assert (s.power_total_mw, s.power_total_of) == (13907.0, "sum")
    assert s.temperatures_c == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}
    assert (s.gpu_load_percent, s.gpu_freq_mhz) == (12.0, 1300.0)
    assert (s.emc_load_percent, s.emc_freq_mhz) == (3.0, 3199.0)
    assert (s.ram_used_mb, s.swap_total_mb) == (20642.0, None)


@pytest.mark.parametrize("line", ["", "hello world", "RAM 1/2MB", "GR3D_FREQ @[1000,1000,1000]"])
def test_what_a_line_lacks_is_absent(line: str) -> None:
    s = parse_line(line)
    assert s.rails_mw == {} and s.power_total_mw is None and s.emc_load_percent is None
    assert s.gpu_load_percent is None  # Thor prints GR3D frequencies without a load
    assert s.gpu_freq_mhz == (1000.0 if "GR3D" in line else None)
