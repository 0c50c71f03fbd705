"""An ingest worker's counters: what /api/v1/health lists per worker and /metrics exports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# the counters a worker process hands back to its parent through shared memory, in this order
COUNTERS = (
    "received",
    "invalid",
    "written",
    "duplicates",
    "statuses",
    "batches",
    "rejected",
    "store_retries",
    "acked",
    "restarts",
)


@dataclass
class IngestStats:
    received: int = 0  # MQTT messages received
    invalid: int = 0  # dropped as invalid (validation, topic and payload disagree)
    written: int = 0  # reports stored that were new
    duplicates: int = 0  # reports already stored (a redelivery, an outbox re-sending)
    statuses: int = 0  # device statuses recorded
    batches: int = 0
    rejected: int = 0  # valid messages the store refused; the rest of their batch was stored
    store_retries: int = 0  # batch writes tried again because the store was unavailable
    acked: int = 0  # messages acknowledged to the broker, each only once stored (or dropped as invalid)
    restarts: int = 0  # times the watchdog restarted this worker (its process or its writer thread)
    alive: bool = True
    pid: int | None = None  # the worker's process
    seen_ids: set[str] | None = None  # filled only when tracking (tests and the scale benchmark)
    started: float = field(default_factory=time.monotonic)
