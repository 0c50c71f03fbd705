"""Prometheus /metrics from served telemetry (the latency summary, served counters and the drift gauges)
and from field re-calibration (old and new engine, promoted, the INT8 gate's verdict)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from host.fleet.store import Store
from host.fleet.web.metrics import render
from shared import protocol as p
from tests.host.fleet.factories import REF, calibration_report, drift_stats, telemetry_report


def _samples(store: Store) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    body, content_type = render(store, [])
    assert content_type.startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_served_latency_counters_and_drift(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.sqlite"))
    for device in ("d1", "d2"):
        store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state="online"))
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    store.add_reports(
        [
            ("lab", telemetry_report("d1", sent_at=t0, requests=100, errors={"too_large": 1})),
            ("lab", telemetry_report("d1", sent_at=t0 + dt.timedelta(seconds=30), requests=200,
                                     latency_ms=p.LatencyStats(p50=2, p90=3, p99=5, max=8, mean=2.5),
                                     drift=drift_stats(2.5))),
            ("lab", telemetry_report("d2", sent_at=t0, drift=None)),
        ]
    )  # fmt: skip
    m = _samples(store)
    d1, d2 = _key(fleet="lab", device="d1"), _key(fleet="lab", device="d2")
    lat = m["edgeloop_served_latency_ms"]
    assert lat[_key(fleet="lab", device="d1", quantile="0.5")] == 2.0  # the latest window's quantiles
    assert lat[_key(fleet="lab", device="d1", quantile="0.99")] == 5.0
    assert lat[_key(fleet="lab", device="d2", quantile="0.9")] == 6.0
    assert m["edgeloop_served_latency_ms_count"][d1] == 300  # running totals of every window
    assert m["edgeloop_served_latency_ms_sum"][d1] == 100 * 4.5 + 200 * 2.5
    assert m["edgeloop_served_requests_total"][d1] == 300 and m["edgeloop_served_requests_total"][d2] == 300
    errors = m["edgeloop_served_errors_total"]
    assert errors[_key(fleet="lab", device="d1", kind="too_large")] == 1
    assert errors[_key(fleet="lab", device="d1", kind="not_an_image")] == 2  # the second window's
    assert m["edgeloop_served_throughput_ips"][d1] == 10.0
    assert m["edgeloop_served_last_report_timestamp_seconds"][d1] == (t0 + dt.timedelta(seconds=30)).timestamp()
    release = _key(fleet="lab", device="d1", release="r20@1.0.0")
    assert m["edgeloop_drift_score"][release] == 2.5 and m["edgeloop_drift_threshold"][release] == 1.0
    assert m["edgeloop_device_drifted"][release] == 1.0 and m["edgeloop_label_drift"][release] == 0.4
    assert not any(dict(k)["device"] == "d2" for k in m["edgeloop_device_drifted"])  # no score: no flag
    assert m["edgeloop_device_online"][d1] == 1.0  # the existing families are still there
    store.close()


def test_no_telemetry_no_served_series(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.sqlite"))
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online"))
    m = _samples(store)
    assert "edgeloop_served_latency_ms" not in m and "edgeloop_device_drifted" not in m
    store.close()


def test_every_grafana_query_names_a_metric_we_export(tmp_path: Path) -> None:
    import json
    import re

    from tests.helpers import REPO
    from tests.shared.factories import benchmark_report

    store = Store(str(tmp_path / "m.sqlite"))
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online"))
    store.add_reports([("lab", telemetry_report("d1")), ("lab", benchmark_report("d1", top1=0.9)),
                       ("lab", calibration_report("d1")), ("lab", _refused("d1"))])  # fmt: skip
    exported = set(_samples(store))
    dashboard = json.loads((REPO / "deploy" / "grafana" / "edgeloop-fleet.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {n for e in exprs for n in re.findall(r"edgeloop_[a-z0-9_]+", e)}
    always = {"edgeloop_rollouts", "edgeloop_ingest_reports_written_total", "edgeloop_ingest_invalid_total"}
    assert named - always <= exported, named - always - exported
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert any("Served latency" in t for t in titles) and any("Drift" in t for t in titles)
    assert any("re-calibration" in t for t in titles) and any("INT8" in t for t in titles)
    store.close()


def _refused(device: str) -> p.EventReport:
    return p.EventReport(device_id=device, level="error", code="int8_verification_failed", message="m", release=REF)


def test_calibration_and_int8_gate_gauges(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.sqlite"))
    for device in ("d1", "d2", "d3"):
        store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state="online", release=REF))
    store.add_reports([
        ("lab", calibration_report("d1")),
        ("lab", calibration_report("d2", evaluation="agreement", top1_before=None, top1_after=None,
                                   agreement_before=0.9, agreement_after=0.8, better=False, promoted=False)),
        ("lab", _refused("d2")),
        ("lab", p.EventReport(device_id="d3", level="info", code="int8_requantized", message="m", release=REF)),
    ])  # fmt: skip
    m = _samples(store)
    rel = "r20@1.0.0"
    score = m["edgeloop_calibration_score"]
    assert score[_key(fleet="lab", device="d1", release=rel, evaluation="labelled", engine="before")] == 0.62
    assert score[_key(fleet="lab", device="d1", release=rel, evaluation="labelled", engine="after")] == 0.81
    assert score[_key(fleet="lab", device="d2", release=rel, evaluation="agreement", engine="after")] == 0.8
    promoted = m["edgeloop_calibration_promoted"]
    assert promoted[_key(fleet="lab", device="d1", release=rel)] == 1.0
    assert promoted[_key(fleet="lab", device="d2", release=rel)] == 0.0
    refused = m["edgeloop_int8_gate_refused"]
    assert refused == {
        _key(fleet="lab", device="d2", release=rel): 1.0,
        _key(fleet="lab", device="d3", release=rel): 0.0,
    }
    store.close()
