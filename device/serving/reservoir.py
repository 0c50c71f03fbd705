"""The field-sample reservoir: a bounded, opt-in, uniform sample of what the device served.

Algorithm R (Vitter's reservoir sampling): the i-th served image replaces a random one of the
``capacity`` slots with probability capacity / i, so at any time the slots are a uniform sample of
everything served since the reservoir was made, whatever the traffic. Each slot is one file, and no
image larger than the disk cap divided by the capacity is kept, so the reservoir never exceeds its
cap. Files are written by a thread of its own: the batcher only draws a random number and notes
the bytes for the slot (a newer image for the same slot replaces one not yet written, exactly as
Algorithm R would), so a burst never drops a replacement and the sample stays uniform.

``sample`` and ``recalibrate`` draw from it (``files()``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from pathlib import Path

from device.serving.batcher import Batch

log = logging.getLogger(__name__)

_STATE = "reservoir.json"


def _suffix(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"\xff\xd8":
        return ".jpg"
    if data[:2] == b"BM":
        return ".bmp"
    return ".webp" if data[8:12] == b"WEBP" else ".img"


class Reservoir:
    def __init__(self, directory: Path, capacity: int = 1000, max_mb: float = 64.0, seed: int | None = None) -> None:
        if capacity < 1 or max_mb <= 0:
            raise ValueError("reservoir capacity >= 1 and max_mb > 0 required")
        self.dir, self.capacity = directory, capacity
        self.max_image_bytes = int(max_mb * 2**20 / capacity)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rng = random.Random(seed)  # noqa: S311  (sampling, not security)
        self._lock = threading.Lock()
        self.seen = self._load_seen()
        self.skipped_large = 0
        self._pending: dict[int, bytes] = {}
        self._wake = threading.Event()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="reservoir", daemon=True)
        self._writer.start()

    def _load_seen(self) -> int:
        try:
            return int(json.loads((self.dir / _STATE).read_text())["seen"])
        except (OSError, ValueError, KeyError, TypeError):
            return len(self.files())

    def offer(self, data: bytes) -> None:
        """Consider one served image (called on the batcher thread; never blocks)."""
        if len(data) > self.max_image_bytes:
            self.skipped_large += 1
            return
        with self._lock:
            self.seen += 1
            slot = self.seen - 1 if self.seen <= self.capacity else self._rng.randrange(self.seen)
            if slot < self.capacity:
                self._pending[slot] = data
        self._wake.set()

    def __call__(self, batch: Batch) -> None:
        """Batch observer: offer every served image that came with its encoded bytes."""
        for raw in batch.raw:
            if raw is not None:
                self.offer(raw)

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("slot-*") if p.is_file() and not p.name.endswith(".tmp"))

    def idle(self) -> bool:
        """True when every kept image is on disk."""
        with self._lock:
            return not self._pending

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, {}
            for slot, data in batch.items():
                self._write(slot, data)
            if self._closing and self.idle():
                return

    def _write(self, slot: int, data: bytes) -> None:
        try:
            for old in self.dir.glob(f"slot-{slot:06d}.*"):
                old.unlink()
            tmp = self.dir / f"slot-{slot:06d}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / f"slot-{slot:06d}{_suffix(data)}")
            self._save_state()
        except OSError as e:  # a full disk must not stop serving
            log.warning("reservoir write failed: %s", e)

    def _save_state(self) -> None:
        tmp = self.dir / f"{_STATE}.tmp"
        tmp.write_text(json.dumps({"seen": self.seen, "capacity": self.capacity}))
        os.replace(tmp, self.dir / _STATE)

    def close(self, timeout: float = 5.0) -> None:
        self._closing = True
        self._wake.set()
        self._writer.join(timeout)
        try:
            self._save_state()  # `seen` also counts the images that were not kept
        except OSError as e:
            log.warning("cannot save the reservoir state: %s", e)
