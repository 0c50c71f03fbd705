"""Prometheus /metrics (prometheus-client): fleet gauges read from the store at scrape time.

Served telemetry (``TelemetryReport``) appears as:

* ``edgeloop_served_latency_ms`` (summary): ``quantile`` 0.5/0.9/0.99 of each device's latest
  telemetry window, with ``_count`` and ``_sum`` the device's running totals of served requests and
  their latency, so ``rate(_sum) / rate(_count)`` is the mean served latency over any range;
* ``edgeloop_served_requests_total`` and ``edgeloop_served_errors_total{kind}`` (counters, totals);
* ``edgeloop_served_throughput_ips`` and ``edgeloop_served_last_report_timestamp_seconds`` (gauges);
* ``edgeloop_drift_score`` (the input drift), ``edgeloop_drift_threshold`` and ``edgeloop_device_drifted``
  (0/1) from the latest window, when it carried a drift score, and ``edgeloop_label_drift`` when the
  device reports it apart (the class mix: it never flags).

Field re-calibration (the fleet view's ``calibration`` and ``int8_gate``) appears as
``edgeloop_calibration_score{engine="before"|"after", evaluation}`` (the latest re-calibration's
top-1 or agreement with FP32, old and new engine), ``edgeloop_calibration_promoted`` (0/1) and
``edgeloop_int8_gate_refused`` (1 when the gate's latest verdict was ``int8_verification_failed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from host.fleet.store import Store
from host.fleet.store.records import FleetDevice
from host.fleet.store.telemetry import ERROR_PREFIX, LATENCY_SUM, REQUESTS
from host.fleet.web.deps import IngestWorker

QUANTILES = (("0.5", "p50_ms"), ("0.9", "p90_ms"), ("0.99", "p99_ms"))
REFUSED = "int8_verification_failed"


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
        devices = self.store.fleet()
        for d in devices:
            up.add_metric([d.fleet, d.device_id], 1.0 if d.state != "offline" else 0.0)
            rel = d.benchmark_release or ""
            if d.p50_ms is not None:
                p50.add_metric([d.fleet, d.device_id, rel], d.p50_ms)
                if d.p99_ms is not None:
                    p99.add_metric([d.fleet, d.device_id, rel], d.p99_ms)
            if d.top1 is not None:
                acc.add_metric([d.fleet, d.device_id, rel], d.top1)
        yield from (up, p50, p99, acc)
        yield from self._served()
        yield from _drift(devices)
        yield from _calibration(devices)
        rollouts = GaugeMetricFamily("edgeloop_rollouts", "rollouts by state", labels=["state"])
        counts: dict[str, int] = {}
        for r in self.store.rollouts():
            counts[r.state] = counts.get(r.state, 0) + 1
        for state, n in counts.items():
            rollouts.add_metric([state], n)
        yield rollouts
        yield from self._ingest()

    def _ingest(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "edgeloop_ingest_messages", "MQTT messages received by ingest", labels=["worker"]
        )
        invalid = CounterMetricFamily("edgeloop_ingest_invalid", "messages dropped as invalid", labels=["worker"])
        written = CounterMetricFamily(
            "edgeloop_ingest_reports_written", "reports written to the store", labels=["worker"]
        )
        rejected = CounterMetricFamily(
            "edgeloop_ingest_rejected", "valid reports the store refused (the rest of their batch was stored)",
            labels=["worker"],
        )  # fmt: skip
        restarts = CounterMetricFamily(
            "edgeloop_ingest_worker_restarts", "ingest workers restarted by the watchdog", labels=["worker"]
        )
        alive = GaugeMetricFamily("edgeloop_ingest_worker_up", "1 while the ingest worker runs", labels=["worker"])
        for i, ing in enumerate(self.ingests):
            s = ing.stats
            for family, value in ((received, s.received), (invalid, s.invalid), (written, s.written),
                                  (rejected, s.rejected), (restarts, s.restarts), (alive, int(s.alive))):  # fmt: skip
                family.add_metric([str(i)], value)
        yield from (received, invalid, written, rejected, restarts, alive)

    def _served(self) -> Iterator[Metric]:
        labels = ["fleet", "device"]
        latency = SummaryMetricFamily(
            "edgeloop_served_latency_ms", "served request latency (latest window's quantiles; totals)", labels=labels
        )
        requests = CounterMetricFamily("edgeloop_served_requests", "requests served (running total)", labels=labels)
        errors = CounterMetricFamily(
            "edgeloop_served_errors", "failed requests by kind (running total)", labels=[*labels, "kind"]
        )
        throughput = GaugeMetricFamily(
            "edgeloop_served_throughput_ips", "served images/s in the latest window", labels=labels
        )
        last = GaugeMetricFamily(
            "edgeloop_served_last_report_timestamp_seconds", "when the latest telemetry was sent", labels=labels
        )
        latest, totals = self.store.latest_telemetry(), self.store.served_totals()
        for key, t in latest.items():
            throughput.add_metric(list(key), t.throughput_ips)
            last.add_metric(list(key), t.sent_at.timestamp())
            for q, column in QUANTILES:
                value = getattr(t, column)
                if value is not None:
                    latency.add_sample(
                        "edgeloop_served_latency_ms", {"fleet": key[0], "device": key[1], "quantile": q}, value
                    )
        for key, counters in totals.items():
            latency.add_metric(list(key), int(counters.get(REQUESTS, 0)), counters.get(LATENCY_SUM, 0.0))
            requests.add_metric(list(key), counters.get(REQUESTS, 0.0))
            for name, value in counters.items():
                if name.startswith(ERROR_PREFIX):
                    errors.add_metric([*key, name.removeprefix(ERROR_PREFIX)], value)
        yield from (latency, requests, errors, throughput, last)


def _drift(devices: Sequence[FleetDevice]) -> Iterator[Metric]:
    labels = ["fleet", "device", "release"]
    score = GaugeMetricFamily(
        "edgeloop_drift_score", "input drift of the served window (shared.drift; what flags)", labels=labels
    )
    threshold = GaugeMetricFamily("edgeloop_drift_threshold", "score at which the device flags drift", labels=labels)
    drifted = GaugeMetricFamily(
        "edgeloop_device_drifted", "1 when the served window is flagged as drifted", labels=labels
    )
    label = GaugeMetricFamily(
        "edgeloop_label_drift",
        "label drift: the predicted-class mix against the reference (never flags)",
        labels=labels,
    )
    for d in devices:
        if d.drift is not None:
            key = [d.fleet, d.device_id, d.served_release or ""]
            score.add_metric(key, d.drift.score)
            threshold.add_metric(key, d.drift.threshold)
            drifted.add_metric(key, 1.0 if d.drift.drifted else 0.0)
            if d.drift.label_drift is not None:
                label.add_metric(key, d.drift.label_drift)
    yield from (score, threshold, drifted, label)


def _calibration(devices: Sequence[FleetDevice]) -> Iterator[Metric]:
    score = GaugeMetricFamily(
        "edgeloop_calibration_score",
        "latest re-calibration: top-1 (labelled) or agreement with FP32, of the old and the new engine",
        labels=["fleet", "device", "release", "evaluation", "engine"],
    )
    promoted = GaugeMetricFamily(
        "edgeloop_calibration_promoted", "1 when the latest re-calibration swapped in its engine", labels=["fleet",
        "device", "release"],
    )  # fmt: skip
    refused = GaugeMetricFamily(
        "edgeloop_int8_gate_refused", "1 when the INT8 gate's latest verdict refused the engine",
        labels=["fleet", "device", "release"],
    )  # fmt: skip
    for d in devices:
        if (c := d.calibration) is not None:
            promoted.add_metric([d.fleet, d.device_id, c.release], 1.0 if c.promoted else 0.0)
            for engine, value in (("before", c.before), ("after", c.after)):
                if value is not None:
                    score.add_metric([d.fleet, d.device_id, c.release, c.evaluation, engine], value)
        if (g := d.int8_gate) is not None:
            refused.add_metric([d.fleet, d.device_id, g.release or ""], 1.0 if g.code == REFUSED else 0.0)
    yield from (score, promoted, refused)


def render(store: Store, ingests: Sequence[IngestWorker]) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(store, ingests))
    return generate_latest(registry), CONTENT_TYPE_LATEST
