from __future__ import annotations

from pathlib import Path

from device.engine.jetson.release import is_jetson, jetpack_major, l4t_release, parse_release

# the first line of /etc/nv_tegra_release on JetPack 4.6 (Nano), 5.1 (Xavier NX) and 6.0 (Orin)
R32 = (
    "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022"
)
R35 = (
    "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19 15:19:21 UTC 2023"
)
R36 = (
    "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024"
)


def test_releases_and_their_jetpack() -> None:
    assert [parse_release(t) for t in (R32, R35, R36)] == ["R32.7.1", "R35.3.1", "R36.3.0"]
    assert [jetpack_major(parse_release(t)) for t in (R32, R35, R36)] == [4, 5, 6]
    assert parse_release("Ubuntu 22.04") is None and jetpack_major(None) is None and jetpack_major("R99.1") is None


def test_off_a_jetson_there_is_no_release(tmp_path: Path) -> None:
    missing = tmp_path / "nv_tegra_release"
    assert not is_jetson(missing) and l4t_release(missing) is None
    missing.write_text(R36 + "\nINSTALL_TYPE=\n")
    assert is_jetson(missing) and l4t_release(missing) == "R36.3.0"
