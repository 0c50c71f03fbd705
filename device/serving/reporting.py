"""``TelemetryReport``: what the server saw in the last interval, as the agent sends it to the host."""

from __future__ import annotations

from device.serving.server import InferenceServer
from device.serving.telemetry import percentiles_ms
from shared.protocol import LatencyStats, Precision, ReleaseRef, TelemetryReport


def telemetry_report(
    server: InferenceServer,
    device_id: str,
    release: ReleaseRef | None,
    runtime: str | None,
    precision: Precision | None,
) -> TelemetryReport:
    """Close the server's current interval and describe it (requests, errors, latency, batching, drift)."""
    interval, seconds = server.telemetry.take_interval()
    served = interval.latency.count > 0
    return TelemetryReport(
        device_id=device_id,
        release=release,
        runtime=runtime,
        precision=precision,
        window_s=round(seconds, 3),
        requests=interval.requests,
        errors=dict(interval.errors),
        throughput_ips=interval.requests / seconds,
        latency_ms=LatencyStats(**percentiles_ms(interval.latency)) if served else None,
        mean_batch=interval.mean_batch,
        mean_queue_depth=interval.mean_queue_depth,
        max_queue_depth=interval.queue_depth_max,
        drift=server.drift.stats(),
    )
