"""Benchmark and evaluate a loaded runtime: a trtexec-like report, also used by the daemon.

Latency: warm-up, then N timed single calls (``time.perf_counter``; CUDA events for the
copy/compute split where the backend provides them). Raw throughput: inference alone on
pre-decoded tensors. Evaluation: decode + preprocess run in a thread pool ahead of inference
(OpenCV releases the GIL), so end-to-end throughput stays close to the raw runtime's. Power: on a
Jetson, the board's power is sampled during the raw-throughput rounds (device/engine/jetson/power.py).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from device.engine.jetson.power import PowerReading, PowerSampler
from device.engine.runtimes.base import Runtime
from shared import datasets, imaging
from shared.datasets import Sample
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing

log = logging.getLogger(__name__)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max()), "mean": float(a.mean())}


@dataclass
class LatencyResult:
    batch: int
    iterations: int
    latency_ms: dict[str, float]
    breakdown_ms: dict[str, float] | None  # mean h2d/compute/d2h where the runtime measures them


@dataclass
class ThroughputResult:
    batch: int
    images: int
    seconds: float

    @property
    def ips(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalResult:
    n_images: int
    top1: float
    seconds: float
    decode_s: float  # read + decode + preprocess, summed over worker threads
    infer_s: float
    per_class: dict[str, float] = field(default_factory=dict)
    predictions: npt.NDArray[np.int64] | None = None
    evaluated: npt.NDArray[np.int64] | None = None  # indices (into the samples) of ``predictions``
    unreadable: int = 0  # images skipped because they could not be read or decoded

    @property
    def throughput_ips(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else 0.0


def _random_input(runtime: Runtime, batch: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *runtime.engine.input_shape), dtype=np.float32)


def measure_latency(
    runtime: Runtime, batch: int = 1, warmup: int = 20, iterations: int = 200, deadline: float | None = None
) -> LatencyResult:
    """``deadline`` (a ``perf_counter()`` time) stops the timed runs early, after at least one."""
    x = _random_input(runtime, batch)
    for _ in range(warmup):
        if deadline is not None and time.perf_counter() > deadline:
            break
        runtime.infer(x)
    times: list[float] = []
    parts: list[tuple[float, float, float]] = []
    for _ in range(iterations):
        if times and deadline is not None and time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        runtime.infer(x)
        times.append((time.perf_counter() - t0) * 1e3)
        t = runtime.last_timing
        if t is not None and t.compute_ms is not None:
            parts.append((t.h2d_ms or 0.0, t.compute_ms, t.d2h_ms or 0.0))
    breakdown = None
    if parts:
        h2d, compute, d2h = np.mean(np.asarray(parts), axis=0)
        breakdown = {"h2d": float(h2d), "compute": float(compute), "d2h": float(d2h)}
    return LatencyResult(batch, len(times), latency_stats(times), breakdown)


def measure_throughput(
    runtime: Runtime, batch: int = 256, min_seconds: float = 2.0, min_batches: int = 5, warmup: int = 2
) -> ThroughputResult:
    batch = min(batch, runtime.engine.max_batch)
    x = _random_input(runtime, batch, seed=1)
    for _ in range(warmup):
        runtime.infer(x)
    n = 0
    t0 = time.perf_counter()
    while True:
        runtime.infer(x)
        n += 1
        elapsed = time.perf_counter() - t0
        if n >= min_batches and elapsed >= min_seconds:
            break
    return ThroughputResult(batch, n * batch, elapsed)


def throughput_rounds(
    runtime: Runtime,
    batch: int = 256,
    rounds: int = 3,
    min_seconds: float = 0.5,
    deadline: float | None = None,
    min_batches: int = 5,
) -> list[float]:
    """Raw throughput (img/s) measured ``rounds`` times back to back; report their median.

    One figure from a shared CPU or a Jetson changing clocks can be off by tens of percent;
    the median of a few short rounds costs little more time and is far steadier.
    """
    return [r.ips for r in _rounds(runtime, batch, rounds, min_seconds, deadline, min_batches)]


def _rounds(
    runtime: Runtime, batch: int, rounds: int, min_seconds: float, deadline: float | None, min_batches: int
) -> list[ThroughputResult]:
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    out: list[ThroughputResult] = []
    for _ in range(rounds):
        if out and deadline is not None and time.perf_counter() > deadline:
            break  # past the benchmark's time budget: the rounds so far give the median
        out.append(measure_throughput(runtime, batch=batch, min_seconds=min_seconds, min_batches=min_batches))
    return out


@dataclass
class RawThroughput:
    """Raw throughput rounds, and the board's power while they ran (None where there is no power source)."""

    rounds: list[ThroughputResult]
    power: PowerReading | None = None

    @property
    def ips(self) -> list[float]:
        return [r.ips for r in self.rounds]

    @property
    def images(self) -> int:
        return sum(r.images for r in self.rounds)

    def power_figures(self) -> dict[str, object] | None:
        return self.power.figures(self.images) if self.power is not None else None


def raw_throughput(
    runtime: Runtime,
    batch: int = 256,
    rounds: int = 3,
    min_seconds: float = 0.5,
    deadline: float | None = None,
    min_batches: int = 5,
    sampler: PowerSampler | None = None,
) -> RawThroughput:
    """``throughput_rounds`` with the board's power sampled while they run (jtop or tegrastats on a
    Jetson; ``sampler`` defaults to the best source there is, and samples nothing elsewhere)."""
    with sampler or PowerSampler() as power:
        done = _rounds(runtime, batch, rounds, min_seconds, deadline, min_batches)
    return RawThroughput(done, power.reading())


def _decode_batch(
    chunk: list[tuple[int, Sample, int]], members: dict[str, bytes], prep: Preprocessing
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64], float]:
    """Read, decode and preprocess one batch in a worker thread (file reads and OpenCV release the GIL).

    An image that cannot be read or decoded is left out and logged, never fatal: the batch returns
    the indices of the samples it did decode.
    """
    t0 = time.perf_counter()
    images, kept, labels = [], [], []
    for index, sample, label in chunk:
        try:
            images.append(imaging.decode(datasets.read_sample(sample, members)))
        except (EdgeloopError, OSError) as e:
            log.warning("skipping unreadable image %s: %s", sample.source, e)
            continue
        kept.append(index)
        labels.append(label)
    x = imaging.preprocess_batch(images, prep)
    return x, np.asarray(labels, dtype=np.int64), np.asarray(kept, dtype=np.int64), time.perf_counter() - t0


def _chunks(
    samples: Sequence[Sample], labels: npt.NDArray[np.int64], size: int
) -> Iterator[list[tuple[int, Sample, int]]]:
    for i in range(0, len(samples), size):
        yield [
            (i + j, s, int(label))
            for j, (s, label) in enumerate(zip(samples[i : i + size], labels[i : i + size], strict=True))
        ]


def evaluate(
    runtime: Runtime,
    samples: Sequence[Sample],
    classes: Sequence[str],
    prep: Preprocessing,
    batch: int = 256,
    workers: int | None = None,
    prefetch: int = 4,
    progress: Callable[[int], None] | None = None,
    members: dict[str, bytes] | None = None,
    deadline: float | None = None,
) -> EvalResult:
    """Top-1 on labelled samples, with decode/preprocess pipelined ahead of inference.

    ``workers`` (decode threads) defaults to one where inference runs on the CPU: the runtime
    already uses every core, one thread decodes 32x32 JPEGs ~10x faster than the CPU infers them,
    and a second only adds contention (measured: 0.84 vs 0.87 of raw throughput on 2 cores). With
    a GPU doing the inference, up to four threads keep it fed. ``members``: the samples' archive
    contents when the caller already read them (``datasets.archive_members``). Unreadable images
    are skipped and counted (``EvalResult.unreadable``); ``deadline`` (a ``perf_counter()`` time)
    stops the evaluation early, on the images done by then.
    """
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if runtime.uses_gpu() else 1
    labels = datasets.label_indices(samples, classes)
    if members is None:  # a .tar.gz is read once, sequentially, before timing starts; folders lazily
        members = datasets.archive_members(samples)
    batch = min(batch, runtime.engine.max_batch)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        run = _pipeline(runtime, pool, _chunks(samples, labels, batch), members, prep, prefetch, deadline, progress)
    preds, truth, kept, decode_s, infer_s = run
    seconds = time.perf_counter() - t0
    p = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    t = np.concatenate(truth) if truth else np.zeros(0, dtype=np.int64)
    done = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    per_class = {c: float((p[t == i] == i).mean()) for i, c in enumerate(classes) if (t == i).any()}
    top1 = float((p == t).mean()) if len(t) else 0.0
    attempted = int(done.max()) + 1 if len(done) else 0
    return EvalResult(len(t), top1, seconds, decode_s, infer_s, per_class, p, done, attempted - len(t))


_Run = tuple[list[npt.NDArray[np.int64]], list[npt.NDArray[np.int64]], list[npt.NDArray[np.int64]], float, float]


def _pipeline(
    runtime: Runtime,
    pool: ThreadPoolExecutor,
    chunks: Iterator[list[tuple[int, Sample, int]]],
    members: dict[str, bytes],
    prep: Preprocessing,
    prefetch: int,
    deadline: float | None,
    progress: Callable[[int], None] | None,
) -> _Run:
    """Decode ``prefetch`` batches ahead of inference; (predictions, labels, indices, decode s, infer s)."""
    preds: list[npt.NDArray[np.int64]] = []
    truth: list[npt.NDArray[np.int64]] = []
    kept: list[npt.NDArray[np.int64]] = []
    decode_s = infer_s = 0.0
    pending: deque[Future[Any]] = deque()
    for chunk in chunks:
        pending.append(pool.submit(_decode_batch, chunk, members, prep))
        if len(pending) >= prefetch:
            break
    while pending:
        x, y, idx, dt = pending.popleft().result()
        past = deadline is not None and time.perf_counter() > deadline
        nxt = None if past else next(chunks, None)
        if nxt is not None:
            pending.append(pool.submit(_decode_batch, nxt, members, prep))
        decode_s += dt
        if len(y):
            ti = time.perf_counter()
            logits = runtime.infer(x)
            infer_s += time.perf_counter() - ti
            preds.append(logits.argmax(1))
            truth.append(y)
            kept.append(idx)
        if progress is not None:
            progress(len(idx))
    return preds, truth, kept, decode_s, infer_s


@dataclass
class RawVsEndToEnd:
    """Raw and end-to-end throughput measured in alternating rounds of one run (medians compared)."""

    raw_ips: list[float]
    end_to_end_ips: list[float]
    evaluation: EvalResult  # the last round's (top-1 is the same in every round)
    raw_images: int = 0  # inferred in the raw rounds
    power: PowerReading | None = None  # the board's, in the raw rounds only (None off a Jetson)

    def power_figures(self) -> dict[str, object] | None:
        return self.power.figures(self.raw_images) if self.power is not None else None

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw_ips)

    @property
    def end_to_end_median(self) -> float:
        return statistics.median(self.end_to_end_ips)

    @property
    def ratio(self) -> float:
        return self.end_to_end_median / self.raw_median if self.raw_median else 0.0


def raw_vs_end_to_end(
    runtime: Runtime,
    samples: Sequence[Sample],
    classes: Sequence[str],
    prep: Preprocessing,
    batch: int = 256,
    rounds: int = 3,
    sampler: PowerSampler | None = None,
) -> RawVsEndToEnd:
    """Evaluate, then time raw inference for as long as the evaluation took; ``rounds`` times.

    Shared CPUs drift by tens of percent within a minute, so one raw figure taken before one
    evaluation compares two different machines; alternating rounds and medians compare like with like.
    The board's power is sampled in the raw rounds (``sampler``: as in ``raw_throughput``).
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    raw: list[ThroughputResult] = []
    e2e: list[float] = []
    ev: EvalResult | None = None
    members = datasets.archive_members(samples)  # once, not once per round
    with sampler or PowerSampler() as power:  # power in the raw rounds: evaluations are paused out
        for r in range(rounds):
            with power.paused():
                ev = evaluate(runtime, samples, classes, prep, batch=batch, members=members)
            e2e.append(ev.throughput_ips)
            raw.append(measure_throughput(runtime, batch=batch, min_seconds=max(1.0, ev.seconds)))
            log.info("round %d/%d: end-to-end %.0f img/s, raw %.0f img/s", r + 1, rounds, e2e[-1], raw[-1].ips)
    if ev is None:  # unreachable: rounds >= 1
        raise ValueError("no rounds ran")
    return RawVsEndToEnd([x.ips for x in raw], e2e, ev, sum(x.images for x in raw), power.reading())
