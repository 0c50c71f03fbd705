from __future__ import annotations

import threading
from typing import Any

from device.serving.model import ModelSlot, ServedModel
from shared.imaging import Preprocessing


class _Closing:
    """Stands in for a runtime: only its close is observed (the slot never runs inference)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def _model(name: str) -> tuple[ServedModel, _Closing]:
    rt = _Closing()
    runtime: Any = rt
    return ServedModel(runtime, ("a", "b"), Preprocessing(), name, on_retire=lambda r: r.close()), rt


def test_swap_without_leases_retires_the_old_model_at_once() -> None:
    slot = ModelSlot()
    old, old_rt = _model("r@1")
    new, new_rt = _model("r@2")
    slot.swap(old)
    slot.swap(new)
    assert old_rt.closed.is_set() and not new_rt.closed.is_set()
    assert slot.current is new and slot.swaps == 2


def test_a_lease_keeps_the_old_model_open_until_it_ends() -> None:
    slot = ModelSlot()
    old, old_rt = _model("r@1")
    new, _ = _model("r@2")
    slot.swap(old)
    with slot.lease() as leased:
        slot.swap(new)
        assert leased is old  # the batch in flight finishes on the model it started with
        assert not old_rt.closed.is_set()
        with slot.lease() as later:
            assert later is new  # requests after the swap go to the new one
    assert old_rt.closed.is_set()


def test_lease_of_an_empty_slot_is_none() -> None:
    with ModelSlot().lease() as m:
        assert m is None


def test_a_failing_close_does_not_escape() -> None:
    slot = ModelSlot()

    def boom(_: Any) -> None:
        raise RuntimeError("close failed")

    rt: Any = _Closing()
    slot.swap(ServedModel(rt, ("a", "b"), Preprocessing(), "r@1", on_retire=boom))
    slot.swap(None)  # logged, not raised
    assert slot.current is None
