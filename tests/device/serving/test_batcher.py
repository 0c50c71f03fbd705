from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import pytest

from device.engine.reference import softmax
from device.serving.batcher import Answer, Batch, DynamicBatcher, Request, ServingError
from device.serving.model import ModelSlot, ServedModel
from device.serving.telemetry import ServingStats
from shared import datasets, imaging


def _images(golden_dir: Path, n: int) -> list[np.ndarray]:
    return list(datasets.load_labelled(golden_dir, limit=n).images)


def _run(batcher: DynamicBatcher, images: list[np.ndarray]) -> list[Answer | ServingError]:
    results: list[Answer | ServingError | None] = [None] * len(images)
    done = threading.Event()
    left = [len(images)]
    lock = threading.Lock()

    def finish(i: int, r: Answer | ServingError) -> None:
        results[i] = r
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    for i, im in enumerate(images):
        batcher.submit(Request(im, functools.partial(finish, i), raw=b"%d" % i))
    assert done.wait(30)
    return [r for r in results if r is not None]


def test_batches_answer_like_the_runtime_itself(served_model: ServedModel, golden_dir: Path) -> None:
    slot, stats = ModelSlot(), ServingStats()
    slot.swap(served_model)
    seen: list[Batch] = []
    batcher = DynamicBatcher(slot, stats, max_batch=16, max_delay_ms=50, observers=[seen.append])
    images = _images(golden_dir, 40)
    batcher.start()
    try:
        answers = _run(batcher, images)
    finally:
        batcher.stop()
    direct = softmax(served_model.runtime.infer(imaging.normalize(np.stack(images), served_model.prep)))
    assert all(isinstance(a, Answer) for a in answers)
    got = np.array([a.index for a in answers if isinstance(a, Answer)])
    assert (got == direct.argmax(1)).all()
    first = answers[0]
    assert isinstance(first, Answer)
    assert first.release == "resnet20@1.0.0" and len(first.top) == 5
    assert first.top[0] == (first.label, pytest.approx(first.confidence))
    assert max(len(b.images) for b in seen) <= 16 and sum(len(b.images) for b in seen) == 40
    assert len(seen) < 40  # requests that arrived together ran together
    assert stats.requests == 40
    assert [raw for b in seen for raw in b.raw][:3] == [b"0", b"1", b"2"]  # the bytes travel with the batch


def test_a_failing_observer_does_not_fail_requests(served_model: ServedModel, golden_dir: Path) -> None:
    slot = ModelSlot()
    slot.swap(served_model)

    def broken(_: Batch) -> None:
        raise RuntimeError("observer bug")

    batcher = DynamicBatcher(slot, ServingStats(), observers=[broken])
    batcher.start()
    try:
        answers = _run(batcher, _images(golden_dir, 5))
    finally:
        batcher.stop()
    assert all(isinstance(a, Answer) for a in answers)


def test_without_a_model_requests_get_not_ready(golden_dir: Path) -> None:
    batcher = DynamicBatcher(ModelSlot(), ServingStats())
    batcher.start()
    try:
        (r,) = _run(batcher, _images(golden_dir, 1))
    finally:
        batcher.stop()
    assert isinstance(r, ServingError) and r.kind == "not_ready" and r.status == 503


def test_a_full_queue_refuses_with_503(golden_dir: Path) -> None:
    batcher = DynamicBatcher(ModelSlot(), ServingStats(), max_queue=2)  # not started: nothing drains
    im = _images(golden_dir, 1)[0]
    for _ in range(2):
        batcher.submit(Request(im, lambda r: None))
    with pytest.raises(ServingError) as e:
        batcher.submit(Request(im, lambda r: None))
    assert e.value.kind == "overloaded" and e.value.status == 503


def test_bad_settings_are_refused() -> None:
    with pytest.raises(Exception, match="max_batch"):
        DynamicBatcher(ModelSlot(), ServingStats(), max_batch=0)
