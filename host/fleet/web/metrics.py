"""Prometheus /metrics (prometheus-client): fleet gauges read from the store at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from host.fleet.store import Store
from host.fleet.web.deps import IngestWorker


class FleetCollector:
    def __init__(self, store: Store, ingests: Sequence[IngestWorker]) -> None:
        self.store = store
        self.ingests = ingests

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "edgeloop_device_online", "1 when the device's last status is online", labels=["fleet", "device"]
        )
        p50 = GaugeMetricFamily(
            "edgeloop_device_latency_p50_ms",
            "last measured p50 latency (batch 1)",
            labels=["fleet", "device", "release"],
        )
        p99 = GaugeMetricFamily(
            "edgeloop_device_latency_p99_ms",
            "last measured p99 latency (batch 1)",
            labels=["fleet", "device", "release"],
        )
        acc = GaugeMetricFamily(
            "edgeloop_device_top1",
            "last measured top-1 on the device's eval set",
            labels=["fleet", "device", "release"],
        )
        for d in self.store.fleet():
            up.add_metric([d.fleet, d.device_id], 1.0 if d.state != "offline" else 0.0)
            rel = d.benchmark_release or ""
            if d.p50_ms is not None:
                p50.add_metric([d.fleet, d.device_id, rel], d.p50_ms)
                if d.p99_ms is not None:
                    p99.add_metric([d.fleet, d.device_id, rel], d.p99_ms)
            if d.top1 is not None:
                acc.add_metric([d.fleet, d.device_id, rel], d.top1)
        yield from (up, p50, p99, acc)
        rollouts = GaugeMetricFamily("edgeloop_rollouts", "rollouts by state", labels=["state"])
        counts: dict[str, int] = {}
        for r in self.store.rollouts():
            counts[r.state] = counts.get(r.state, 0) + 1
        for state, n in counts.items():
            rollouts.add_metric([state], n)
        yield rollouts
        received = CounterMetricFamily(
            "edgeloop_ingest_messages", "MQTT messages received by ingest", labels=["worker"]
        )
        invalid = CounterMetricFamily("edgeloop_ingest_invalid", "messages dropped as invalid", labels=["worker"])
        written = CounterMetricFamily(
            "edgeloop_ingest_reports_written", "reports written to the store", labels=["worker"]
        )
        for i, ing in enumerate(self.ingests):
            received.add_metric([str(i)], ing.stats.received)
            invalid.add_metric([str(i)], ing.stats.invalid)
            written.add_metric([str(i)], ing.stats.written)
        yield from (received, invalid, written)


def render(store: Store, ingests: Sequence[IngestWorker]) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(store, ingests))
    return generate_latest(registry), CONTENT_TYPE_LATEST
