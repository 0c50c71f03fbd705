"""``edgeloop-agent loadgen``: a ``hey``/``wrk``-style load generator for the inference API.

It sends the images of a folder (an ImageFolder tree: one sub-folder per class, or a flat folder of
images) from ``concurrency`` concurrent keep-alive connections (aiohttp), checks every answer's
label against the image's folder, and reports throughput, latency percentiles (DDSketch) and
top-1. By default it sends every image once, so its top-1 is comparable to ``edgeloop evaluate``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mimetypes
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.engine.histogram import LatencyHistogram, new_histogram, percentiles_ms
from shared import datasets
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    data: bytes
    content_type: str
    label: str | None  # the folder's class name; None for a flat folder


def load_items(data_dir: str | Path) -> list[Item]:
    root = Path(data_dir)
    if not root.is_dir():
        raise EdgeloopError(f"--data {root} is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES)
    if not files:
        raise EdgeloopError(f"no images ({', '.join(sorted(datasets.IMAGE_SUFFIXES))}) under {root}")
    items = []
    for f in files:
        label = f.parent.name if f.parent != root else None
        items.append(Item(f.read_bytes(), mimetypes.guess_type(f.name)[0] or "application/octet-stream", label))
    return items


@dataclass
class _Tally:
    latency: LatencyHistogram = field(default_factory=new_histogram)
    requests: int = 0
    errors: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    labelled: int = 0
    correct: int = 0
    releases: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors += 1
        self.by_status[what] = self.by_status.get(what, 0) + 1


async def _one(session: Any, url: str, item: Item, tally: _Tally, timeout: float) -> None:
    import aiohttp

    t0 = time.perf_counter()
    try:
        async with session.post(url, data=item.data, headers={"Content-Type": item.content_type}) as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, ValueError) as e:
        tally.requests += 1
        tally.error(type(e).__name__)
        return
    tally.requests += 1
    tally.latency.record_value(max(1, round((time.perf_counter() - t0) * 1e6)))
    if status != 200:
        tally.error(str(status))
        return
    release = str(body.get("release"))
    tally.releases[release] = tally.releases.get(release, 0) + 1
    if item.label is not None:
        tally.labelled += 1
        tally.correct += body.get("label") == item.label


async def _run(url: str, items: list[Item], concurrency: int, duration: float | None, requests: int | None,
               timeout: float) -> tuple[_Tally, float]:  # fmt: skip
    import aiohttp

    tally = _Tally()
    order = itertools.cycle(items) if duration is not None or (requests or 0) > len(items) else iter(items)
    budget = itertools.count() if duration is not None else iter(range(requests or len(items)))
    stop_at = time.perf_counter() + duration if duration is not None else None
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def worker() -> None:
            for _, item in zip(budget, order, strict=False):
                if stop_at is not None and time.perf_counter() >= stop_at:
                    return
                await _one(session, url, item, tally, timeout)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return tally, time.perf_counter() - t0


def loadgen(
    url: str,
    data: str | Path,
    concurrency: int = 16,
    duration: float | None = None,
    requests: int | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Run the load and return the report (the ``--json`` fields)."""
    if concurrency < 1:
        raise EdgeloopError("--concurrency must be at least 1")
    if duration is not None and requests is not None:
        raise EdgeloopError("give --duration or --requests, not both")
    if (duration is not None and duration <= 0) or (requests is not None and requests < 1):
        raise EdgeloopError("--duration must be > 0 and --requests >= 1")
    items = load_items(data)
    target = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1/classify") else "/v1/classify")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tally, seconds = asyncio.run(_run(target, items, concurrency, duration, requests, timeout))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "url": target,
        "requests": tally.requests,
        "errors": tally.errors,
        "errors_by_status": tally.by_status,
        "concurrency": concurrency,
        "duration_s": round(seconds, 3),
        "throughput_rps": (tally.requests - tally.errors) / seconds if seconds > 0 else 0.0,
        "latency_ms": percentiles_ms(tally.latency),
        "top1": tally.correct / tally.labelled if tally.labelled else None,
        "n_labelled": tally.labelled,
        "releases": tally.releases,
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 3),
    }
