"""The latency search on the real ResNet-20 space, with the measurement replaced by latency models."""

from __future__ import annotations

import logging

import pytest

from host.factory import models
from host.factory.compress.latency.search import TargetUnreachableError, search
from host.factory.compress.latency.space import Arch, ResNetSpace
from tests.host.factory.compress.latency_models import FakeMeter, int8_floor_at_32, wide_8x8_is_slow


@pytest.fixture(scope="module")
def space() -> ResNetSpace:
    return ResNetSpace(models.build("resnet20"), "bn_scale", round_to=8)


def test_a_32x32_floor_makes_it_drop_stage_1_blocks_not_channels(space: ResNetSpace) -> None:
    """INT8 time at 32x32 that does not fall with width: the search removes stage-1 blocks, and
    stops as soon as the target is met (two blocks: 78 -> 60 -> 42 ms against 50)."""
    assert int8_floor_at_32(space, space.start()) == pytest.approx(78.0, abs=0.1)
    meter = FakeMeter(space, int8_floor_at_32, target_ms=50.0)
    result = search(space, meter)
    assert result.arch == Arch(shrink=(0, 0, 0), dropped=(2, 0, 0))
    assert result.ms <= 50.0 < int8_floor_at_32(space, Arch(dropped=(1, 0, 0)))
    chosen = [it.chosen for it in result.trace if it.chosen]
    assert len(chosen) == 2 and all(c.startswith("drop layer1.") for c in chosen)
    assert space.short(result.arch) == "16x1 32x3 64x3"
    # every iteration: a confirmation of the current model alone, then all its moves beside it in one run
    assert [confirm for _, confirm in meter.calls] == [True, False, True, False, True]
    first_round = meter.calls[1][0]
    assert first_round[0] == space.start() and set(first_round[1:]) == {m.arch for m in space.moves(space.start())}
    # the trace has every candidate with its MACs, time and saving
    it0 = result.trace[0]
    assert it0.macs == 40_813_184 and it0.confirmed_ms == pytest.approx(78.0, abs=0.1)
    assert {c.move for c in it0.candidates} == {m.name for m in space.moves(space.start())}
    best = max(it0.candidates, key=lambda c: c.ms_per_mmac or 0)
    assert best.move == it0.chosen and best.saved_ms == pytest.approx(18.0)


def test_a_target_already_met_changes_nothing(space: ResNetSpace) -> None:
    result = search(space, FakeMeter(space, int8_floor_at_32, target_ms=100.0))
    assert result.arch == space.start() and len(result.trace) == 1 and result.trace[0].chosen is None


def test_time_that_follows_8x8_macs_makes_it_cut_stage_3(space: ResNetSpace) -> None:
    start_ms = wide_8x8_is_slow(space, space.start())
    result = search(space, FakeMeter(space, wide_8x8_is_slow, target_ms=0.8 * start_ms))
    chosen = [it.chosen for it in result.trace if it.chosen]
    assert chosen and all(c in ("shrink 8x8", "drop layer3.1", "drop layer3.2") for c in chosen)
    assert result.arch.shrink[:2] == (0, 0) and result.arch.dropped[:2] == (0, 0)
    assert result.ms <= 0.8 * start_ms


def test_an_unreachable_target_says_the_smallest_latency_reached(space: ResNetSpace) -> None:
    """Below the stem's fixed 9 ms no architecture goes: the error names the best one found."""
    with pytest.raises(TargetUnreachableError, match=r"smallest latency reached was 11\.\d ms \(8x0 8x1 16x1") as e:
        search(space, FakeMeter(space, int8_floor_at_32, target_ms=5.0))
    assert "against a target of 5.0 ms" in str(e.value)


def test_max_iterations_bounds_the_search(space: ResNetSpace) -> None:
    with pytest.raises(TargetUnreachableError, match="2 iterations were not enough"):
        search(space, FakeMeter(space, int8_floor_at_32, target_ms=20.0), max_iterations=2)


def test_without_block_removal_only_widths_move() -> None:
    space = ResNetSpace(models.build("resnet20"), "l1", remove_blocks=False)
    assert [m.name for m in space.moves(space.start())] == ["shrink 32x32", "shrink 16x16", "shrink 8x8"]
    result = search(space, FakeMeter(space, wide_8x8_is_slow, target_ms=0.9 * wide_8x8_is_slow(space, space.start())))
    assert result.arch.dropped == (0, 0, 0) and result.arch.shrink[2] > 0


def test_when_no_move_saves_time_it_takes_the_cheapest_and_warns(
    space: ResNetSpace, caplog: pytest.LogCaptureFixture
) -> None:
    """Noise can make every move look slower than the current model; the search still moves on."""
    start = space.start()

    def noisy(arch: Arch) -> float:  # the first side-by-side run has every candidate 30 ms slow
        return 30.0 if len(meter.calls) == 2 and arch != start else 0.0

    meter = FakeMeter(space, int8_floor_at_32, target_ms=61.0, noise=noisy)
    with caplog.at_level(logging.WARNING):
        result = search(space, meter, max_iterations=1)
    assert "no move saved time" in caplog.text
    assert result.trace[0].chosen is not None and result.trace[0].chosen.startswith("drop layer1.")
