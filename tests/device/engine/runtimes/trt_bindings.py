"""The names in real TensorRT Python bindings, read from the ``tensorrt-cu12-bindings`` wheels without TensorRT.

The wheels' ``tensorrt_bindings/tensorrt.so`` cannot be imported without the TensorRT libraries, but
pybind11 keeps the name of every class, method, property, enum value and keyword argument as a
NUL-terminated string in the library's ``.rodata``. Linkers merge string tails (``INT8`` may live at
the end of ``UINT8``), so a name counts as present when ``name`` + NUL occurs there: a name that
does not occur is certainly absent; one that does is present somewhere (not necessarily on the
class the code expects). Names the wheel defines in Python (``__version__`` in 10.x) come from its
``__init__.py``.

One wheel per supported version (``SUPPORTED``) is fetched with pip and cached (``EDGELOOP_TRT_BINDINGS_CACHE``,
else ``$XDG_CACHE_HOME/edgeloop/tensorrt-bindings``, else ``~/.cache/edgeloop/tensorrt-bindings``).
"""

from __future__ import annotations

import ast
import functools
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

# one bindings wheel per supported TensorRT version, by label:
# - 10.3 is JetPack 6's TensorRT (apt's 10.3.0.30, which is not on PyPI). PyPI has 10.3.0 for x86_64 only
#   (manylinux_2_17; no aarch64 wheel), built from the same pybind11 sources, so it has the same names;
# - 10.13 is the newest 10.x of the JetPack era, 11.4 the newest 11.x on the registry (both manylinux_2_28).
SUPPORTED = {"10.3": "10.3.0", "10.13": "10.13.3.9", "11.4": "11.4.0.106"}
PACKAGE = "tensorrt-cu12-bindings"
# pip does not widen an explicit manylinux_2_28 to older tags: name 2_17 too, for 10.3.0's wheel
PIP_ARGS = (
    "--no-deps",
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
)
PIP_PATIENCE = ("--retries", "1", "--timeout", "30")  # without network, say so in seconds, not minutes
_unavailable: dict[str, str] = {}  # version -> why, so that each test does not try again


def major(label: str) -> int:
    """The major version of a ``SUPPORTED`` label ("10.3" -> 10): the fakes come in one flavour per major."""
    return int(label.split(".", maxsplit=1)[0])


class BindingsUnavailable(Exception):
    """The wheel is neither cached nor downloadable here (no network, registry down)."""


def cache_dir() -> Path:
    explicit = os.environ.get("EDGELOOP_TRT_BINDINGS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeloop" / "tensorrt-bindings"


def wheel(version: str) -> Path:
    """The cached wheel of ``version``, downloaded with pip the first time."""
    folder = cache_dir()
    pattern = f"tensorrt_cu12_bindings-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[0]
    if version in _unavailable:
        raise BindingsUnavailable(_unavailable[version])
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        spec = f"{PACKAGE}=={version}"
        cmd = [sys.executable, "-m", "pip", "download", "-q", *PIP_ARGS, *PIP_PATIENCE, "-d", tmp, spec]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])[:400]
        except subprocess.TimeoutExpired:
            done, tail = None, "timed out after 300 s"
        got = sorted(Path(tmp).glob(pattern))
        if done is None or done.returncode != 0 or not got:
            _unavailable[version] = f"pip download {spec} failed: {tail}"
            raise BindingsUnavailable(_unavailable[version])
        target = folder / got[0].name
        got[0].replace(target)  # atomic within the cache folder: a concurrent run sees all or nothing
    return target


@dataclass(frozen=True)
class BindingNames:
    """What one bindings wheel offers, by name."""

    version: str
    rodata: bytes
    python_names: frozenset[str]

    def has(self, name: str) -> bool:
        return name in self.python_names or name.encode() + b"\0" in self.rodata


def _python_names(source: str) -> frozenset[str]:
    """Names the package's ``__init__.py`` defines: module globals, and ``Class.attr = ...`` targets."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return frozenset(names)


@functools.cache
def binding_names(version: str) -> BindingNames:
    with zipfile.ZipFile(wheel(version)) as whl:
        library = whl.read("tensorrt_bindings/tensorrt.so")
        init = whl.read("tensorrt_bindings/__init__.py").decode()
    section = ELFFile(io.BytesIO(library)).get_section_by_name(".rodata")
    if section is None:
        raise AssertionError(f"{PACKAGE} {version}: tensorrt.so has no .rodata section")
    return BindingNames(version, section.data(), _python_names(init))
