"""The L4T (Linux for Tegra) release of a Jetson, from ``/etc/nv_tegra_release``.

JetPack 4 is L4T R32, JetPack 5 is R35, JetPack 6 is R36 and JetPack 7 is R38. The file's first line
reads, for example (JetPack 6.0, Orin)::

    # R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024

TensorRT engines and timing caches are tied to the TensorRT and driver of one release, so the engine
cache key carries it: a JetPack upgrade rebuilds the engines instead of loading ones that break.
"""

from __future__ import annotations

import re
from pathlib import Path

RELEASE_FILE = Path("/etc/nv_tegra_release")
_LINE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")
_JETPACK = {32: 4, 34: 5, 35: 5, 36: 6, 38: 7, 39: 7}


def parse_release(text: str) -> str | None:
    """``"R36.3.0"`` from the file's text, None when it is not an L4T release line."""
    m = _LINE.search(text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def jetpack_major(release: str | None) -> int | None:
    """The JetPack major version of an L4T release (``"R36.3.0"`` -> 6), None when unknown."""
    if not release:
        return None
    m = re.match(r"R(\d+)", release)
    return _JETPACK.get(int(m.group(1))) if m else None


def is_jetson(path: Path = RELEASE_FILE) -> bool:
    return path.is_file()


def l4t_release(path: Path = RELEASE_FILE) -> str | None:
    """This board's L4T release, None off a Jetson (or when the file cannot be read)."""
    try:
        return parse_release(path.read_text(errors="replace"))
    except OSError:
        return None
