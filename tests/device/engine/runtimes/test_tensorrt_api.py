"""API conformance of the TensorRT backend against the real TensorRT 10.3, 10.13 and 11.4 Python bindings, without
a GPU.

For each supported version (``trt_bindings.SUPPORTED``: JetPack 6's 10.3, the newest 10.x and the newest 11.x),
one ``tensorrt-cu12-bindings`` wheel is fetched (and cached) and
the names in its ``tensorrt.so`` are read (``trt_bindings``). The TensorRT names the backend uses
are derived from its code (``trt_api_usage``: an ``ast`` walk of ``device/engine/runtimes/tensorrt/``),
along the paths each version takes through the backend's ``hasattr`` branches. A name used on a
version's path that the version lacks fails the test.

Without network (and no cached wheel) the tests that need a wheel skip, except under ``CI=true``,
where they fail: CI must check the API.
"""

from __future__ import annotations

import os

import pytest

from tests.device.engine.runtimes.trt_api_usage import Use, analyse, backend_sources, bare_any
from tests.device.engine.runtimes.trt_bindings import (
    PACKAGE,
    SUPPORTED,
    BindingNames,
    BindingsUnavailable,
    binding_names,
    cache_dir,
    major,
)
from tests.device.engine.runtimes.trt_fakes import public_names
from tests.helpers import REPO

pytestmark = pytest.mark.tensorrt_api

BACKEND = REPO / "device" / "engine" / "runtimes" / "tensorrt"
# names the issue names, so a walk that silently saw nothing cannot pass
CORE = {"set_memory_pool_limit", "STRONGLY_TYPED", "execute_async_v3", "create_timing_cache", "set_input_shape"}
# the DLA build and run (issue 21): the same names in every supported version, so on every version's path
DLA = {"num_DLA_cores", "DLA_core", "default_device_type", "DeviceType", "DLA", "GPU_FALLBACK"}
LABELS = list(SUPPORTED)  # oldest first


def _bindings(label: str) -> BindingNames:
    version = SUPPORTED[label]
    try:
        return binding_names(version)
    except BindingsUnavailable as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must check the TensorRT API, but {PACKAGE} {version} is not available: {e}")
        pytest.skip(f"{PACKAGE} {version} is not cached in {cache_dir()} and cannot be downloaded here: {e}")


def _listing(uses: list[Use]) -> str:
    return "\n  ".join(sorted({f"{u.name} ({u.how}, {u.where})" for u in uses}))


@pytest.mark.parametrize("label", LABELS, ids=lambda label: f"tensorrt{label}")
def test_every_name_on_a_version_path_exists_in_that_version(label: str) -> None:
    names = _bindings(label)
    uses = analyse(backend_sources(BACKEND), names.has).uses
    missing = [u for u in uses if not names.has(u.name)]
    assert not missing, f"TensorRT {names.version} has no such names, used on its path:\n  {_listing(missing)}"
    assert {u.name for u in uses} >= CORE | DLA, "the walk missed names the backend is known to use"


def test_the_version_paths_are_where_10_and_11_differ() -> None:
    """On 11 the walk leaves out the weakly typed flags and the platform queries; on every 10.x it takes them,
    and every version takes the same DLA path."""
    on = {label: {u.name for u in analyse(backend_sources(BACKEND), _bindings(label).has).uses} for label in LABELS}
    tens, elevens = [on[x] for x in LABELS if major(x) == 10], [on[x] for x in LABELS if major(x) == 11]
    assert len(tens) >= 2 and elevens  # JetPack 6's 10.3 and the newest 10.x; 11.x
    only_10 = {"FP16", "platform_has_fast_int8", "platform_has_fast_fp16"}
    for ten in tens:
        assert only_10 <= ten and "device_memory_size" not in ten  # 10.0's name: 10.1+ take the _v2 branch
        assert all(eleven <= ten for eleven in elevens)
    for eleven in elevens:
        assert not only_10 & eleven and "device_memory_size" not in eleven
    assert all(names >= DLA for names in on.values())


def test_every_guard_asks_for_a_name_some_supported_version_has() -> None:
    """A ``hasattr`` guard no version satisfies is a typo or dead code: its branch would never run."""
    versions = [_bindings(label) for label in LABELS]
    sources = backend_sources(BACKEND)
    guards = [g for names in versions for g in analyse(sources, names.has).guards]
    dead = [g for g in guards if not any(names.has(g.name) for names in versions)]
    assert guards and not dead, f"no supported TensorRT has:\n  {_listing(dead)}"


@pytest.mark.parametrize("label", LABELS, ids=lambda label: f"tensorrt{label}")
def test_the_unit_test_fakes_offer_only_real_names(label: str) -> None:
    """The fakes behind the unit tests (trt_fakes.py; one flavour per major) may not offer what the real bindings
    of any version of that major lack (the 10.x fake stands for 10.3 and 10.13 alike)."""
    names = _bindings(label)
    fake = public_names(major(label))
    extra = sorted(n for n in fake if not names.has(n))
    assert not extra, f"the {major(label)}.x fake offers names TensorRT {names.version} lacks: {extra}"


def test_every_tensorrt_value_is_typed_as_one() -> None:
    """The walk finds TensorRT objects by their ``Trt*`` types: a value typed plain ``Any`` would hide its uses."""
    assert not bare_any(backend_sources(BACKEND))


# -- the checker itself: it finds what it should, on small made-up backends --------------------------------------

HEADER = """
from typing import Any, TypeAlias
TrtModule: TypeAlias = Any
TrtBuilder: TypeAlias = Any
TrtEngine: TypeAlias = Any
"""


def _missing(body: str, present: set[str]) -> set[str]:
    uses = analyse({"b.py": HEADER + body}, present.__contains__).uses
    return {u.name for u in uses} - present


def test_checker_unguarded_name() -> None:
    body = "def f(trt: TrtModule, bc: Any) -> None:\n    trt.BuilderFlag.FP16\n"
    assert _missing(body, {"BuilderFlag"}) == {"FP16"}


def test_checker_guarded_branch_runs_only_where_the_name_is() -> None:
    body = """
def f(trt: TrtModule, builder: TrtBuilder) -> None:
    if hasattr(trt.BuilderFlag, "FP16"):
        builder.set_flag(trt.BuilderFlag.FP16)
        builder.platform_has_fast_fp16
    else:
        builder.only_in_11
"""
    assert _missing(body, {"BuilderFlag", "set_flag", "only_in_11"}) == set()  # 11: the else branch
    assert _missing(body, {"BuilderFlag", "set_flag", "FP16", "only_in_11"}) == {"platform_has_fast_fp16"}


def test_checker_early_return_helper_guard_and_short_circuit() -> None:
    body = """
def weak(trt: TrtModule) -> bool:
    return hasattr(trt.BuilderFlag, "FP16")

def f(trt: TrtModule, engine: Any) -> int:
    w = weak(trt)
    x = hasattr(trt, "NEW") and trt.NEW.value
    if not w:
        return trt.eleven
    return trt.BuilderFlag.FP16
"""
    assert _missing(body, {"BuilderFlag", "eleven"}) == set()
    assert _missing(body, {"BuilderFlag", "FP16", "NEW"}) == {"value"}


def test_checker_follows_objects_through_locals_returns_fields_and_keywords() -> None:
    body = """
from dataclasses import dataclass

@dataclass
class Held:
    trt_engine: TrtEngine

def make(trt: TrtModule) -> tuple[TrtBuilder, int]:
    return trt.Builder(None), 1

def f(trt: TrtModule, held: Held) -> None:
    builder, n = make(trt)
    network = builder.create_network(0)
    network.num_inputs
    held.trt_engine.device_memory_size
    builder.set_timing_cache(None, ignore_mismatch=False)
    plain = len([n])
    plain.not_tensorrt
"""
    present = {"Builder", "create_network", "set_timing_cache"}
    assert _missing(body, present) == {"num_inputs", "device_memory_size", "ignore_mismatch"}


def test_checker_sees_overrides_of_tensorrt_classes() -> None:
    body = """
def f(trt: TrtModule) -> None:
    class P(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
        def report_layer_time(self, name: str, ms: float) -> None:
            self.mine = ms
"""
    assert _missing(body, {"IProfiler"}) == {"report_layer_time"}


def test_checker_finds_guards_and_bare_any() -> None:
    body = "def f(trt: TrtModule, x: Any) -> Any:\n    return getattr(trt, 'FP61', None)\n"
    assert [g.name for g in analyse({"b.py": HEADER + body}, set().__contains__).guards] == ["FP61"]
    assert bare_any({"b.py": HEADER + body}) == ["b.py:6", "b.py:6"]
