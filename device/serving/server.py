"""``InferenceServer``: the served model, the batcher, telemetry, drift and the HTTP API, as one unit.

The agent daemon runs one (``[inference]`` in agent.toml) and swaps its model on every activation;
``edgeloop-agent serve MODEL.onnx`` runs one standalone. It reports ready only after a warm-up
inference on the loaded engine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np

from device.serving.app import create_app
from device.serving.batcher import Answer, DynamicBatcher, Observer, Request, ServingError
from device.serving.config import InferenceConfig
from device.serving.drift import DriftMonitor
from device.serving.model import ModelSlot, ServedModel
from device.serving.reservoir import Reservoir
from device.serving.telemetry import ServingStats
from shared.errors import EdgeloopError
from shared.httpserver import uvicorn_config
from shared.imaging import U8Image

log = logging.getLogger(__name__)


def _resolve(fut: asyncio.Future[Answer], result: Answer | ServingError) -> None:
    if fut.done():  # the client went away and the handler was cancelled
        return
    if isinstance(result, ServingError):
        fut.set_exception(result)
    else:
        fut.set_result(result)


class InferenceServer:
    def __init__(self, config: InferenceConfig, reservoir: Reservoir | None = None) -> None:
        self.config = config
        self.slot = ModelSlot()
        self.telemetry = ServingStats(window_s=config.stats_window_s, enabled=config.telemetry)
        self.drift = DriftMonitor(config.drift.window, config.drift.min_images, config.drift.threshold)
        self.reservoir = reservoir
        observers: list[Observer] = [self.drift] if config.telemetry else []
        observers += [reservoir] if reservoir is not None else []
        self.batcher = DynamicBatcher(
            self.slot, self.telemetry, config.max_batch, config.max_delay_ms, config.max_queue, observers
        )
        self.max_body_bytes = config.max_body_kb * 1024
        self.max_image_pixels = config.max_image_pixels
        self.body_timeout_s = config.http.body_timeout_s
        self._ready = threading.Event()
        self._http: Any = None
        self._thread: threading.Thread | None = None

    # -- model -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def input_size(self) -> int | None:
        model = self.slot.current
        return model.input_size if model is not None else None

    def serve(self, model: ServedModel) -> None:
        """Warm ``model`` up, then answer with it; requests in flight finish on the old one."""
        size = model.prep.size
        warm = np.zeros((1, 3, size, size), dtype=np.float32)
        try:
            model.runtime.infer(warm)
        except EdgeloopError as e:
            raise EdgeloopError(f"warm-up inference of {model.release or 'the model'} failed: {e}") from e
        self.slot.swap(model)
        self.drift.reset(model.reference, len(model.classes))
        self._ready.set()

    # -- requests ----------------------------------------------------------------------------
    async def classify(self, image: U8Image, raw: bytes) -> Answer:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Answer] = loop.create_future()
        keep = raw if self.reservoir is not None else None

        def done(result: Answer | ServingError) -> None:  # on the batcher thread
            loop.call_soon_threadsafe(_resolve, fut, result)

        self.batcher.submit(Request(image, done, keep))
        return await fut

    def classify_sync(self, image: U8Image, raw: bytes | None = None, timeout: float = 30.0) -> Answer:
        """For frame sources (their own threads): blocks until the batch with this image ran."""
        done = threading.Event()
        box: list[Answer | ServingError] = []

        def finish(result: Answer | ServingError) -> None:
            box.append(result)
            done.set()

        self.batcher.submit(Request(image, finish, raw if self.reservoir is not None else None))
        if not done.wait(timeout):
            raise ServingError("timeout", f"no answer within {timeout:.0f} s", 504)
        result = box[0]
        if isinstance(result, ServingError):
            raise result
        return result

    def count_error(self, kind: str) -> None:
        self.telemetry.record_error(kind)

    def stats(self) -> dict[str, object]:
        window = self.telemetry.window()
        drift = self.drift.stats()
        model = self.slot.current
        return {
            **window,
            "totals": {
                "requests": self.telemetry.requests,
                "errors": sum(self.telemetry.errors.values()),
                "errors_by_kind": dict(self.telemetry.errors),
                "uptime_s": round(time.monotonic() - self.telemetry.started, 3),
                "engine_swaps": self.slot.swaps,
                "batches": self.telemetry.batches,
                "mean_batch": self.telemetry.batched_images / max(1, self.telemetry.batches),
                "inference_s": round(self.telemetry.inference_s, 3),
            },
            "queue_depth": self.batcher.queue_depth,
            "release": model.release if model else None,
            "drift": {
                "score": drift.score if drift else None,
                "threshold": self.drift.threshold,
                "drifted": bool(drift and drift.drifted),
                "input_drift": drift.input_drift if drift else None,
                "label_drift": drift.label_drift if drift else None,
                "n_images": drift.n_images if drift else 0,
                "details": drift.model_dump() if drift else None,
            },
        }

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batcher and the HTTP server (in a thread); returns once it listens."""
        import uvicorn  # the ASGI server; imported here so `edgeloop-agent --help` stays fast

        host, port = self.config.host_port()
        self.batcher.start()
        app = create_app(self, self.config.decode_threads)
        self._http = uvicorn.Server(uvicorn_config(app, host, port, self.config.http))
        self._thread = threading.Thread(target=self._http.run, name="inference-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._http.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise EdgeloopError(f"the inference API could not listen on {host}:{port} (port in use?)")
            time.sleep(0.02)
        log.info("inference API on http://%s:%d (max batch %d, max delay %.1f ms)", host, port,
                 self.config.max_batch, self.config.max_delay_ms)  # fmt: skip

    @property
    def url(self) -> str:
        host, port = self.config.host_port()
        if self._http is not None and self._http.servers:  # port 0: the one the OS picked
            port = self._http.servers[0].sockets[0].getsockname()[1]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
        self.batcher.stop()
        self.slot.swap(None)
        if self.reservoir is not None:
            self.reservoir.close()
