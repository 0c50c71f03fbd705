"""The typed return path: states defined once, gates on wire models, records as the API's JSON."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

from host.fleet.rollout import gates
from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store
from host.fleet.store.records import (
    ACTIVE,
    TERMINAL,
    DeviceState,
    RolloutDeviceRecord,
    RolloutMember,
)
from host.fleet.web.encode import event_json, record_json, rollout_json
from shared import protocol as p
from tests.host.fleet.factories import telemetry_report
from tests.shared.factories import benchmark_report, manifest

ROLLOUT_KEYS = ["id", "release_name", "release_version", "fleet", "state", "config", "current_wave", "reason",
                "created_at", "updated_at", "waves", "devices"]  # fmt: skip
WAVE_KEYS = ["rollout_id", "wave", "state", "started_at", "deadline", "finished_at", "summary"]
MEMBER_KEYS = ["rollout_id", "device_id", "wave", "state", "command_id", "published", "previous_name",
               "previous_version", "was_online", "top1", "p99_ms", "error", "updated_at", "epoch"]  # fmt: skip
FLEET_KEYS = ["fleet", "device_id", "state", "release", "runtime", "precision", "accelerator", "gpu", "p50_ms",
              "p99_ms", "top1", "benchmark_release", "last_seen", "system", "served_p50_ms", "served_p99_ms",
              "served_throughput_ips", "served_requests", "served_errors", "served_release", "served_at",
              "drift", "calibration", "int8_gate", "warnings"]  # fmt: skip
LIVE_KEYS = ["message_id", "fleet", "device_id", "release_name", "release_version", "runtime", "precision",
             "window_s", "requests", "errors", "error_count", "throughput_ips", "p50_ms", "p90_ms", "p99_ms",
             "max_ms", "mean_ms", "mean_batch", "mean_queue_depth", "max_queue_depth", "drift_score",
             "drift_threshold", "drifted", "drift", "sent_at", "received_at"]  # fmt: skip
DRIFT_KEYS = ["score", "threshold", "drifted", "input_drift", "label_drift", "n_images", "at"]
CALIBRATION_FLAG_KEYS = ["command_id", "action", "state", "release", "evaluation", "before", "after", "better",
                         "promoted", "error", "at"]  # fmt: skip
TELEMETRY_KEYS = ["message_id", "fleet", "device_id", "rollout_id", "release_name", "release_version", "runtime",
                  "precision", "accelerator", "p50_ms", "p90_ms", "p99_ms", "top1", "n_images", "throughput_ips",
                  "e2e_throughput_ips", "sent_at", "received_at"]  # fmt: skip


def test_device_states_are_the_wire_states() -> None:
    assert set(get_args(DeviceState)) == set(get_args(p.DeviceStatus.model_fields["state"].annotation))


def test_state_groups() -> None:
    assert set(ACTIVE) == {"running", "rolling_back"}
    assert set(TERMINAL) == {"completed", "aborted", "rolled_back"}


MEMBER = RolloutDeviceRecord(
    rollout_id="ro-1", device_id="d1", wave=0, state="passed", command_id=None, command=None, published=True,
    previous_name=None, previous_version=None, was_online=True, top1=0.9, p99_ms=1.0, error=None,
    updated_at=datetime.now(timezone.utc),
)  # fmt: skip


def _member(**kw: Any) -> RolloutDeviceRecord:
    return dataclasses.replace(MEMBER, **kw)


def test_gates_read_the_benchmark_report() -> None:
    m = manifest()  # source top-1 0.91
    cfg = RolloutConfig(max_accuracy_drop=1.0, p99_budget_ms=2.5)
    ok = gates.judge(
        benchmark_report(top1=0.905, latency_ms=p.LatencyStats(p50=1, p90=1, p99=2, max=3, mean=1)), m, cfg
    )
    assert (ok.state, ok.top1, ok.p99_ms, ok.error) == ("passed", 0.905, 2.0, None)
    bad = gates.judge(benchmark_report(top1=0.85), m, cfg)  # p99 3.0 ms
    assert bad.state == "gate_failed" and bad.error is not None
    assert "top-1 85.00% < gate 90.00%" in bad.error and "p99 3.000 ms > budget 2.5 ms" in bad.error
    blind = gates.judge(benchmark_report(top1=None), m, RolloutConfig())
    assert blind.state == "gate_failed" and "no accuracy" in (blind.error or "")


def test_wave_summary_counts_failures_and_offline_devices() -> None:
    members = [
        _member(device_id="d1", top1=0.8),
        _member(device_id="d2", state="timeout", top1=None, was_online=False, error="no report"),
    ]
    s = gates.summarize(members)
    assert (s.devices, s.failure_fraction, s.mean_top1, s.offline) == (2, 0.5, 0.8, ["d2"])
    assert [(f.device_id, f.state) for f in s.failed] == [("d2", "timeout")]
    assert not gates.passes(s, RolloutConfig(abort_failures=0.25)) and gates.passes(
        s, RolloutConfig(abort_failures=0.5)
    )
    assert gates.failure_reasons(s) == "d2: no report"


def test_records_encode_to_the_api_json(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.sqlite"))
    m = manifest()
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", release=m.ref,
                                       system=p.SystemInfo(cpu_percent=5.0, sources=("psutil",))))  # fmt: skip
    store.create_rollout("ro-1", m, "lab", RolloutConfig(), [[RolloutMember("d1", None, None, was_online=True)]])
    cid = uuid.uuid4()
    store.update_rollout_device("ro-1", "d1", state="sent", command_id=str(cid), command="{}")
    ev = p.EventReport(device_id="d1", level="warning", code="slow", message="m")
    store.add_reports([("lab", benchmark_report(rollout_id="ro-1", command_id=cid, release=m.ref)), ("lab", ev)])
    r = store.rollout("ro-1")
    assert r is not None
    out = json.loads(json.dumps(rollout_json(r)))
    assert list(out) == ROLLOUT_KEYS and out["config"] == RolloutConfig().model_dump(mode="json")
    assert list(out["waves"][0]) == WAVE_KEYS and list(out["devices"][0]) == MEMBER_KEYS
    assert out["created_at"].endswith("+00:00") and out["devices"][0]["command_id"] == str(cid)
    (dev,) = store.fleet("lab")
    fleet = record_json(dev)
    assert list(fleet) == FLEET_KEYS and fleet["release"] == "r20@1.0.0" and fleet["p99_ms"] == 3.0
    assert fleet["system"]["sources"] == ["psutil"] and fleet["benchmark_release"] == "r20@1.0.0"
    assert fleet["drift"] is None and fleet["served_p99_ms"] is None  # nothing served yet
    served = telemetry_report()
    store.add_reports([("lab", served)])
    fleet = json.loads(json.dumps(record_json(store.fleet("lab")[0])))
    assert list(fleet) == FLEET_KEYS and list(fleet["drift"]) == DRIFT_KEYS
    assert fleet["drift"] == {"score": 0.2, "threshold": 1.0, "drifted": False, "input_drift": 0.2,
                              "label_drift": 0.4, "n_images": 500, "at": served.sent_at.isoformat()}  # fmt: skip
    assert (fleet["served_p50_ms"], fleet["served_p99_ms"], fleet["served_requests"], fleet["served_errors"]) == (
        4.0, 9.0, 300, 2)  # fmt: skip
    (point,) = store.telemetry_series("lab")
    live = json.loads(json.dumps(record_json(point)))
    assert list(live) == LIVE_KEYS and live["errors"] == {"not_an_image": 2} and live["drift"]["score"] == 0.2
    assert live["sent_at"].endswith("+00:00") and live["message_id"] == str(served.message_id)
    (bench,) = store.benchmark_series("lab")
    assert list(record_json(bench)) == TELEMETRY_KEYS
    (event,) = store.events()
    assert event_json(event) == {"fleet": "lab", **json.loads(ev.model_dump_json())}
    (deploy_answer,) = store.reports_for_commands([str(cid)], p.BenchmarkReport)
    assert deploy_answer.device_id == "d1" and deploy_answer.report.latency_ms.p99 == 3.0
    assert deploy_answer.received_at.tzinfo is not None
    store.close()
