"""The device side installs on a Jetson from wheels alone: no compiler, no torch.

The built wheel's ``[device]`` and ``[jetson]`` (and on 3.12, JetPack 7's ``[jetson7]``) extras are resolved by
``pip install --dry-run --only-binary=:all:`` for linux aarch64 with glibc 2.35 (Ubuntu 22.04, JetPack 6), for
the Python running the test. scripts/test.sh runs the device tests on 3.10 and 3.12, so CI resolves cp310 and
cp312. pip evaluates environment markers on the interpreter that runs it, never on ``--python-version``, so
the test uses this Python's own pip rather than one pip with ``--python-version``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# what pip on a glibc 2.35 aarch64 board accepts: every manylinux tag down to manylinux2014 (pip's --platform
# takes the tags literally and does not add the older ones)
PLATFORMS = [f"manylinux_2_{m}_aarch64" for m in range(35, 16, -1)] + ["manylinux2014_aarch64"]
NEEDS_A_COMPILER = {"hdrhistogram", "pycuda", "torch"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    done = subprocess.run([*cmd, str(REPO)], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed: {done.stderr[-2000:]}")
    return next(out.glob("edgeloop-*.whl"))


def _resolve(wheel: Path, extra: str, tmp: Path) -> dict[str, str]:
    report = tmp / f"{extra}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--only-binary=:all:", "--ignore-installed"]
    cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd += ["--target", str(tmp / "target"), "--disable-pip-version-check", "--report", str(report)]
    done = subprocess.run([*cmd, f"{wheel}[{extra}]"], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"[{extra}] does not resolve from aarch64 wheels alone:\n{done.stderr[-3000:]}")
    installs = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["download_info"]["url"] for i in installs}


def _extras() -> list[str]:
    return ["device", "jetson"] + (["jetson7"] if sys.version_info >= (3, 12) else [])


@pytest.mark.parametrize("extra", _extras())
def test_the_device_extras_install_on_aarch64_from_wheels_only(wheel: Path, extra: str, tmp_path: Path) -> None:
    files = _resolve(wheel, extra, tmp_path)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert {"edgeloop", "onnxruntime", "opencv-python-headless", "paho-mqtt", "ddsketch"} <= set(files)
    assert not NEEDS_A_COMPILER & set(files), f"{NEEDS_A_COMPILER & set(files)} would be installed"
    assert all(url.endswith(".whl") for url in files.values())
    for name in ("onnxruntime", "numpy", "pydantic-core"):  # compiled: built for this Python on aarch64
        assert "aarch64" in files[name] and (tag in files[name] or "abi3" in files[name]), files[name]
    if sys.version_info < (3, 11):
        assert "tomli" in files  # pydantic-settings reads agent.toml with it on 3.10
    if extra != "device":
        cuda = files["cuda-python"].rsplit("/", 1)[-1]
        assert cuda.startswith("cuda_python-12.6" if extra == "jetson" else "cuda_python-13"), cuda
