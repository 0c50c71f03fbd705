"""The device's drift monitor: the last ``window`` served images against the release's reference
(the statistics and the score are ``shared.drift``'s, so host and device compute the same thing).

The score is the input drift (``shared.inputstats``: compared with the reference's images of the same
predicted classes, so that a camera watching one scene is not a field shift); the label drift (the
predicted-class mix) is reported beside it and never flags."""

from __future__ import annotations

import threading

import numpy as np

from device.serving.batcher import Batch
from shared import drift, inputstats
from shared.drift import Summary
from shared.protocol import DriftStats


class DriftMonitor:
    def __init__(self, window: int = 500, min_images: int = 100, threshold: float = drift.DEFAULT_THRESHOLD) -> None:
        if window < 1 or not 1 <= min_images <= window or threshold <= 0:
            raise ValueError("drift window >= min_images >= 1 and threshold > 0 required")
        self.window, self.min_images, self.threshold = window, min_images, threshold
        self._lock = threading.Lock()
        self._reference: Summary | None = None
        self._n_classes = 0
        self._inputs = np.zeros((window, len(inputstats.STATS)), dtype=np.float32)
        self._detail = np.zeros(window, dtype=np.float32)
        self._conf = np.zeros(window, dtype=np.float32)
        self._pred = np.zeros(window, dtype=np.int64)
        self._count = 0  # images seen since the last reset (the ring holds min(count, window))

    def reset(self, reference: Summary | None, n_classes: int) -> None:
        """A new release: a new reference, and the window starts empty."""
        with self._lock:
            self._reference, self._n_classes, self._count = reference, n_classes, 0

    def __call__(self, batch: Batch) -> None:
        """Batch observer: add what was served."""
        if batch.model.reference is not self._reference:
            self.reset(batch.model.reference, len(batch.model.classes))
        n = min(len(batch.images), self.window)
        images, probs = batch.images[-n:], batch.probs[-n:]
        stats, details = inputstats.image_stats(images), drift.detail(images)
        conf, pred = drift.confidences(probs)
        with self._lock:
            slots = (self._count + np.arange(n)) % self.window
            self._inputs[slots], self._detail[slots] = stats, details
            self._conf[slots], self._pred[slots] = conf, pred
            self._count += n

    def stats(self) -> DriftStats | None:
        """The drift of the current window; None without a reference or before ``min_images``."""
        with self._lock:
            reference, n = self._reference, min(self._count, self.window)
            if reference is None or n < self.min_images:
                return None
            inputs = self._inputs[:n]
            window = drift.summarize(
                inputs[:, inputstats.CHANNEL_MEANS], self._detail[:n], self._conf[:n], self._pred[:n],
                self._n_classes, inputs,
            )  # fmt: skip
        s = drift.score(reference, window)
        return DriftStats(
            score=s.score,
            threshold=self.threshold,
            drifted=s.score >= self.threshold,
            n_images=n,
            psi_confidence=s.psi_confidence,
            psi_class=s.psi_class,
            channel_shift=s.channel_shift,
            detail_shift=s.detail_shift,
            input_drift=s.input_drift,
            label_drift=s.label_drift,
            input_shifts=s.input_shifts,
        )
