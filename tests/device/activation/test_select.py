"""The selection by measurement, with the trials and the timing patched at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from device.activation.int8 import Loaded
from device.activation.records import ActivationError
from device.activation.select import Option, Selector, Trial
from device.config import SelectionConfig
from device.engine.runtimes.base import Engine
from shared.protocol import Artifact, EngineCandidate, Precision


@dataclass
class _Runtime:
    name: str
    closed: bool = False

    def close(self) -> None:
        self.closed = True

    def target(self) -> str:
        return self.name


def _artifact(precision: Precision, name: str | None = None) -> Artifact:
    name = name or f"m-{precision}.onnx"
    return Artifact(name=name, url=name, sha256=(name.encode().hex() * 64)[:64], size=1, precision=precision)


@dataclass
class _Fleet:
    """What each option does when tried: img/s, or an error code; and whether it verifies."""

    speed: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)
    untrusted: set[str] = field(default_factory=set)
    runtimes: list[_Runtime] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)

    def trial(self, option: Option) -> Trial:
        label = option.label
        self.tried.append(label)
        if label in self.errors:
            raise ActivationError(self.errors[label], f"{label} broke")
        rt = _Runtime(option.runtime)
        self.runtimes.append(rt)
        self.labels[id(rt)] = f"{option.runtime} {option.artifact.precision}"
        engine = Engine(Path("e"), option.runtime, option.artifact.precision, "x", (3, 32, 32), 64)
        loaded = Loaded(rt, option.artifact, engine, False, Path("m.onnx"))  # type: ignore[arg-type]  # a fake
        verified = None if label in self.untrusted else True
        own = EngineCandidate(
            runtime=option.runtime,
            precision=option.artifact.precision,
            artifact=option.artifact.name,
            verified=verified,
        )
        return Trial(loaded, 0.9, own, trusted=label not in self.untrusted)

    def measure(self, rt: Any) -> float:
        label = self.labels[id(rt)]
        self.measured.append(label)
        return self.speed[label]


OPTIONS = [
    Option("openvino", _artifact("int8")),
    Option("openvino", _artifact("fp32")),
    Option("onnxruntime", _artifact("int8")),
    Option("onnxruntime", _artifact("fp32")),
]
SPEED = {"openvino int8": 4000.0, "openvino fp32": 1500.0, "onnxruntime int8": 1800.0, "onnxruntime fp32": 1600.0}


def _run(fleet: _Fleet, options: list[Option] = OPTIONS, **settings: Any) -> Any:
    return Selector(SelectionConfig(**settings), fleet.trial, fleet.measure).run(options)


def test_the_fastest_verified_candidate_wins_and_the_others_are_closed() -> None:
    fleet = _Fleet(dict(SPEED))
    chosen = _run(fleet)
    assert (chosen.loaded.runtime.name, chosen.loaded.artifact.precision) == ("openvino", "int8")
    assert [(c.runtime, c.precision, c.throughput_ips, c.chosen) for c in chosen.candidates] == [
        ("openvino", "int8", 4000.0, True),
        ("openvino", "fp32", 1500.0, False),
        ("onnxruntime", "int8", 1800.0, False),
        ("onnxruntime", "fp32", 1600.0, False),
    ]
    assert chosen.candidates[0].note.startswith("fastest verified: 2.22x the runner-up (onnxruntime int8)")
    assert chosen.candidates[2].note.startswith("0.45x the winner")
    assert [rt.closed for rt in fleet.runtimes] == [False, True, True, True]
    assert chosen.seconds >= 0


def test_an_unverified_engine_only_wins_when_nothing_verified() -> None:
    fleet = _Fleet(dict(SPEED), untrusted={"openvino int8"})
    chosen = _run(fleet)
    assert (chosen.loaded.runtime.name, chosen.loaded.artifact.precision) == ("onnxruntime", "int8")
    fleet = _Fleet(dict(SPEED), untrusted=set(SPEED))
    chosen = _run(fleet)
    assert chosen.loaded.artifact.precision == "int8" and chosen.loaded.runtime.name == "openvino"
    assert chosen.candidates[0].note.startswith("no candidate verified; fastest unverified")


def test_failed_candidates_are_listed_and_the_rest_still_compete() -> None:
    fleet = _Fleet(dict(SPEED), errors={"openvino int8": "engine_build_failed"})
    chosen = _run(fleet)
    assert (chosen.loaded.runtime.name, chosen.loaded.artifact.precision) == ("onnxruntime", "int8")
    first = chosen.candidates[0]
    assert (first.runtime, first.verified, first.throughput_ips) == ("openvino", False, None)
    assert first.note.startswith("engine_build_failed: openvino int8 broke")


def test_when_every_candidate_fails_the_first_reason_is_raised_with_all_of_them() -> None:
    fleet = _Fleet(
        {}, errors={o.label: code for o, code in zip(OPTIONS, ["selftest_failed", "a", "b", "c"], strict=True)}
    )
    with pytest.raises(ActivationError) as e:
        _run(fleet)
    assert e.value.code == "selftest_failed"
    assert all(o.label in str(e.value) for o in OPTIONS)


def test_the_budget_bounds_the_selection() -> None:
    ticks = iter(range(0, 1000, 10))  # every clock read is 10 s later
    fleet = _Fleet(dict(SPEED))
    selector = Selector(SelectionConfig(budget_s=15), fleet.trial, fleet.measure, clock=lambda: float(next(ticks)))
    chosen = selector.run(OPTIONS)
    assert fleet.tried == ["openvino int8", "openvino fp32"]
    skipped = chosen.candidates[2:]
    assert [c.runtime for c in skipped] == ["onnxruntime", "onnxruntime"]
    assert all(c.throughput_ips is None and "budget of 15 s" in c.note for c in skipped)


def test_one_candidate_or_measure_off_is_not_timed() -> None:
    fleet = _Fleet(dict(SPEED))
    chosen = _run(fleet, OPTIONS[:1])
    assert fleet.measured == [] and chosen.candidates[0].chosen
    fleet = _Fleet(dict(SPEED))
    chosen = _run(fleet, measure=False)
    assert fleet.tried == ["openvino int8"] and fleet.measured == []
    fleet = _Fleet(dict(SPEED), errors={"openvino int8": "selftest_failed"})
    with pytest.raises(ActivationError, match="openvino int8 broke"):  # no other candidate: the error stands
        _run(fleet, measure=False)


def test_a_fallback_to_an_engine_already_timed_is_not_timed_twice() -> None:
    same = _artifact("fp32")
    options = [Option("onnxruntime", same), Option("onnxruntime", same, calibrate=True)]
    fleet = _Fleet({"onnxruntime fp32": 1000.0})
    chosen = _run(fleet, options)
    assert fleet.measured == ["onnxruntime fp32"] and len(chosen.candidates) == 1
    assert fleet.runtimes[1].closed and not fleet.runtimes[0].closed
