"""Dynamic batching, as Triton does it: requests that arrive together run as one batch.

The batcher thread takes the first waiting request, then keeps collecting until it has
``max_batch`` requests or ``max_delay_ms`` have passed since that first one, runs the batch on the
served model (one lease per batch, see ``model.ModelSlot``) and answers every request. Inference
releases the GIL (ONNX Runtime, TensorRT), so the HTTP event loop keeps accepting meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device.engine.reference import softmax
from device.serving.model import ModelSlot, ServedModel
from device.serving.telemetry import ServingStats
from shared import imaging
from shared.errors import EdgeloopError
from shared.imaging import U8Image

log = logging.getLogger(__name__)

TOP_K = 5


class ServingError(EdgeloopError):
    """A request the server could not answer; ``kind`` is counted in the telemetry."""

    def __init__(self, kind: str, message: str, status: int) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


@dataclass(frozen=True)
class Answer:
    index: int
    label: str
    confidence: float
    top: list[tuple[str, float]]
    latency_ms: float
    release: str | None


@dataclass
class Request:
    image: U8Image  # H x W x 3 RGB
    done: Callable[[Answer | ServingError], None]
    raw: bytes | None = None  # the encoded image, for the field-sample reservoir
    t0: float = 0.0  # perf_counter() at arrival


@dataclass(frozen=True)
class Batch:
    """What observers (drift, reservoir) see of every batch that ran."""

    images: npt.NDArray[np.uint8]  # N x H x W x 3
    probs: npt.NDArray[np.float32]  # N x classes
    raw: Sequence[bytes | None]
    model: ServedModel


Observer = Callable[[Batch], None]


class DynamicBatcher:
    def __init__(
        self,
        slot: ModelSlot,
        stats: ServingStats,
        max_batch: int = 64,
        max_delay_ms: float = 2.0,
        max_queue: int = 2048,
        observers: Sequence[Observer] = (),
    ) -> None:
        if max_batch < 1 or max_delay_ms < 0 or max_queue < 1:
            raise EdgeloopError("max_batch and max_queue must be >= 1 and max_delay_ms >= 0")
        self.slot, self.stats = slot, stats
        self.max_batch, self.max_delay_s = max_batch, max_delay_ms / 1e3
        self.observers = list(observers)
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._stopping = False

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() or self._stopping or not self._thread.ident

    def restart(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, request: Request) -> None:
        """Queue one request; its ``done`` callback runs on the batcher thread."""
        if self._stopping:
            raise ServingError("unavailable", "the server is shutting down", 503)
        if not request.t0:
            request.t0 = time.perf_counter()
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise ServingError("overloaded", f"more than {self._queue.maxsize} requests are waiting", 503) from None

    # -- the batcher thread ------------------------------------------------------------------
    def _collect(self, first: Request) -> list[Request]:
        batch = [first]
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # stop: finish this batch first
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._collect(first)
            try:
                self._process(batch)
            except Exception:  # never let one batch kill the thread; its requests get an error
                log.exception("batch of %d failed", len(batch))
                self._fail(batch, ServingError("internal", "internal error while serving", 500))

    def _fail(self, batch: Sequence[Request], error: ServingError) -> None:
        # not counted here: whoever answers the request (HTTP handler, frame source) counts its errors
        for r in batch:
            _deliver(r, error)

    def _process(self, batch: list[Request]) -> None:
        depth = self._queue.qsize()
        with self.slot.lease() as model:
            if model is None:
                self._fail(batch, ServingError("not_ready", "no model is loaded yet", 503))
                return
            size = model.input_size
            images = np.stack([imaging.resize(r.image, size) for r in batch])
            t0 = time.perf_counter()
            try:
                probs = self._infer(model, images)
            except EdgeloopError as e:
                self._fail(batch, ServingError("inference", f"inference failed: {e}", 500))
                return
            infer_s = time.perf_counter() - t0
        self.stats.record_batch(len(batch), depth, infer_s)
        self._answer(batch, probs, model)
        if self.observers:
            view = Batch(images, probs, [r.raw for r in batch], model)
            for observe in self.observers:
                try:
                    observe(view)
                except Exception:  # telemetry must never fail serving
                    log.exception("batch observer %r failed", observe)

    @staticmethod
    def _infer(model: ServedModel, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        x = imaging.normalize(images, model.prep)
        step = model.runtime.engine.max_batch
        logits = [model.runtime.infer(x[i : i + step]) for i in range(0, len(x), step)]
        return softmax(np.concatenate(logits) if len(logits) > 1 else logits[0])

    def _answer(self, batch: list[Request], probs: npt.NDArray[np.float32], model: ServedModel) -> None:
        k = min(TOP_K, probs.shape[1])
        top = np.argsort(-probs, axis=1)[:, :k]
        now = time.perf_counter()
        for r, p, idx in zip(batch, probs, top, strict=True):
            latency = (now - r.t0) * 1e3
            best = int(idx[0])
            answer = Answer(
                index=best,
                label=model.classes[best],
                confidence=float(p[best]),
                top=[(model.classes[int(i)], float(p[int(i)])) for i in idx],
                latency_ms=latency,
                release=model.release,
            )
            self.stats.record_request(latency)
            _deliver(r, answer)


def _deliver(request: Request, result: Answer | ServingError) -> None:
    try:
        request.done(result)
    except Exception:  # a caller that went away (closed loop, dropped socket) must not stop the batch
        log.exception("could not deliver a result")
