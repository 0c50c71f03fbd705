"""The served model and its atomic swap.

``ModelSlot`` holds the model that answers requests. A swap puts the new one in place with one
assignment; whoever holds a lease on the old one (a batch in flight) finishes on it, and the old
runtime is closed when the last lease is returned. So an engine swap never fails a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from device.engine.runtimes.base import Runtime
from shared.drift import Summary
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ServedModel:
    """One engine as the server uses it, with what it needs to answer and to watch for drift."""

    runtime: Runtime
    classes: tuple[str, ...]
    prep: Preprocessing
    release: str | None  # "name@version", None when served standalone
    reference: Summary | None = None
    on_retire: Callable[[Runtime], None] | None = None  # default: close the runtime
    _leases: int = field(default=0, repr=False)
    _retired: bool = field(default=False, repr=False)

    @property
    def input_size(self) -> int:
        return self.prep.size


class ModelSlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: ServedModel | None = None
        self.swaps = 0

    @property
    def current(self) -> ServedModel | None:
        return self._model

    def swap(self, model: ServedModel | None) -> None:
        """Serve ``model`` from now on; the previous one retires when its last lease ends."""
        with self._lock:
            old, self._model = self._model, model
            self.swaps += 1
            if old is None or old is model:
                return
            old._retired = True
            idle = old._leases == 0
        log.info("serving %s (was %s)", model.release if model else None, old.release)
        if idle:
            _retire(old)

    @contextmanager
    def lease(self) -> Iterator[ServedModel | None]:
        """The current model, kept open until the block ends (None when nothing is loaded)."""
        with self._lock:
            model = self._model
            if model is not None:
                model._leases += 1
        try:
            yield model
        finally:
            if model is not None:
                with self._lock:
                    model._leases -= 1
                    done = model._retired and model._leases == 0
                if done:
                    _retire(model)


def _retire(model: ServedModel) -> None:
    try:
        (model.on_retire or Runtime.close)(model.runtime)
    except Exception:  # a failing close must not fail the request that ended the lease
        log.exception("closing the retired engine of %s failed", model.release)
