from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from shared import protocol as p
from shared.errors import EdgeloopError
from tests.shared.factories import manifest


def _roundtrip_command(cmd: object) -> object:
    return p.decode_command(p.encode(cmd))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cmd",
    [
        p.DeployCommand(device_id="dev-1", manifest=manifest(), base_url="http://h/", rollout_id="r1"),
        p.BenchmarkCommand(device_id="dev-1"),
        p.RecalibrateCommand(device_id="dev-1", n_images=64),
        p.RollbackCommand(device_id="dev-1", target=p.ReleaseRef(name="r20", version="0.9")),
        p.SampleCommand(device_id="dev-1", n_images=4, upload_url="http://host:8080/upload"),
    ],
)
def test_every_command_kind_round_trips(cmd: object) -> None:
    back = _roundtrip_command(cmd)
    assert back == cmd
    assert type(back) is type(cmd)


@pytest.mark.parametrize(
    "report",
    [
        p.DeployReport(device_id="d", release=p.ReleaseRef(name="r", version="1.0"), ok=True, selftest_top1=0.9),
        p.BenchmarkReport(
            device_id="d",
            runtime="onnxruntime",
            precision="int8",
            batch=1,
            iterations=10,
            latency_ms=p.LatencyStats(p50=1, p90=2, p99=3, max=4, mean=1.5),
            raw_throughput_ips=100.0,
        ),
        p.CalibrationReport(device_id="d", release=p.ReleaseRef(name="r", version="1.0"), method="entropy", n_images=8),
        p.EventReport(device_id="d", level="error", code="artifact_sha256_mismatch", message="bad"),
    ],
)
def test_every_report_kind_round_trips(report: object) -> None:
    back = p.decode_report(p.encode(report))  # type: ignore[arg-type]
    assert back == report


def test_status_round_trips_and_envelope_fields() -> None:
    s = p.DeviceStatus(device_id="jetson_01", fleet="lab", state="online", system=p.SystemInfo(cpu_percent=3.0))
    data = json.loads(p.encode(s))
    assert data["schema_version"] == 1
    uuid.UUID(data["message_id"])
    assert data["sent_at"].endswith("Z")
    assert data["system"]["gpu_load_percent"] is None  # absent, not zero
    assert p.decode_status(p.encode(s)) == s


def test_extra_fields_are_rejected() -> None:
    data = json.loads(p.encode(p.BenchmarkCommand(device_id="d")))
    data["surprise"] = 1
    with pytest.raises(p.ProtocolError, match="surprise"):
        p.decode_command(json.dumps(data))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(kind="explode"),
        lambda d: d.update(schema_version=2),
        lambda d: d.update(device_id="a/b"),
        lambda d: d.update(device_id="+"),
        lambda d: d.update(device_id=""),
        lambda d: d.update(device_id="x" * 65),
        lambda d: d.update(message_id="not-a-uuid"),
        lambda d: d.update(sent_at="2026-01-01T00:00:00"),  # naive time: no timezone
        lambda d: d["bench"].update(iterations="12.5%"),
        lambda d: d.pop("device_id"),
    ],
)
def test_bad_payloads_are_rejected(mutate: object) -> None:
    data = json.loads(p.encode(p.BenchmarkCommand(device_id="d")))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(p.ProtocolError):
        p.decode_command(json.dumps(data))


@pytest.mark.parametrize("payload", [b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"kind": "deploy"}'])
def test_garbage_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_command(payload)
    with pytest.raises(p.ProtocolError):
        p.decode_report(payload)


def test_sent_at_is_normalised_to_utc() -> None:
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    s = p.BenchmarkCommand(device_id="d", sent_at=local)
    assert s.sent_at.tzinfo == timezone.utc
    assert s.sent_at.hour == 10


def test_numbers_stay_numbers() -> None:
    r = p.BenchmarkReport(
        device_id="d",
        runtime="ort",
        precision="fp32",
        batch=1,
        iterations=1,
        latency_ms=p.LatencyStats(p50=1.25, p90=2, p99=3, max=4, mean=1),
        raw_throughput_ips=10,
    )
    data = json.loads(p.encode(r))
    assert data["latency_ms"]["p50"] == 1.25
    with pytest.raises(ValueError):
        p.LatencyStats(p50=float("nan"), p90=1, p99=1, max=1, mean=1)
    with pytest.raises(ValueError):
        p.DeployReport(device_id="d", release=p.ReleaseRef(name="r", version="1"), ok=True, selftest_top1=1.5)


def test_topics_are_built_in_one_place_and_validated() -> None:
    assert p.status_topic("lab", "dev-1") == "edgeloop/v1/lab/dev-1/status"
    assert p.command_topic("lab", "dev-1") == "edgeloop/v1/lab/dev-1/cmd"
    assert p.report_topic("lab", "dev-1", "benchmark") == "edgeloop/v1/lab/dev-1/report/benchmark"
    assert p.report_filter(shared_group="edgeloop-ingest") == "$share/edgeloop-ingest/edgeloop/v1/+/+/report/#"
    assert p.report_filter("lab") == "edgeloop/v1/lab/+/report/#"
    for bad in ("a/b", "#", "+", "", "x" * 65, "é"):
        with pytest.raises(p.ProtocolError):
            p.status_topic(bad, "d")
        with pytest.raises(p.ProtocolError):
            p.command_topic("f", bad)
    with pytest.raises(p.ProtocolError):
        p.report_topic("f", "d", "nope")


def test_parse_topic() -> None:
    t = p.parse_topic("edgeloop/v1/lab/dev-1/report/deploy")
    assert (t.fleet, t.device, t.channel, t.kind) == ("lab", "dev-1", "report", "deploy")
    assert p.parse_topic("edgeloop/v1/lab/dev-1/status").channel == "status"
    for bad in ("edgeloop/v2/a/b/status", "edgeloop/v1/a/b/report/x", "edgeloop/v1/a/b", "x"):
        with pytest.raises(p.ProtocolError):
            p.parse_topic(bad)


def test_versions_compare_numerically() -> None:
    assert p.version_key("1.10.0") > p.version_key("1.9.9")
    assert p.version_key("2") == p.version_key("2.0.0.0")
    with pytest.raises(EdgeloopError):
        p.version_key("1.0-beta")
    with pytest.raises(ValueError):
        manifest(version="v1")


def test_manifest_picks_artifact_for_runtime() -> None:
    arts = (
        p.Artifact(name="a.onnx", url="a", sha256="a" * 64, size=1, precision="fp32"),
        p.Artifact(name="b.onnx", url="b", sha256="b" * 64, size=1, precision="int8", runtime="onnxruntime"),
        p.Artifact(name="c.onnx", url="c", sha256="c" * 64, size=1, precision="int8", runtime="tensorrt"),
    )
    m = manifest(artifacts=arts)
    assert m.artifact_for("onnxruntime", "int8").name == "b.onnx"
    assert m.artifact_for("tensorrt", "int8").name == "c.onnx"
    assert m.artifact_for("tensorrt", "fp32").name == "a.onnx"
    with pytest.raises(EdgeloopError):
        m.artifact_for("onnxruntime", "fp16")


def test_artifact_urls_must_be_http() -> None:
    with pytest.raises(ValueError):
        p.Artifact(name="a.onnx", url="file:///etc/passwd", sha256="a" * 64, size=1, precision="fp32")
    with pytest.raises(ValueError):
        p.Artifact(name="../a.onnx", url="a", sha256="a" * 64, size=1, precision="fp32")


def test_model_info_checks_shape_and_classes() -> None:
    from tests.shared.factories import model_info

    with pytest.raises(ValueError):
        model_info(input_shape=(3, 64, 64))
    with pytest.raises(ValueError):
        model_info(classes=("a", "a", "b"))


def _drift_reference() -> p.DriftReference:
    import numpy as np

    from shared import drift

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(10), 40).astype(np.float32)
    return p.DriftReference.from_summary(drift.summarize_images(images, probs, 10), "test")


def test_a_drift_reference_carries_its_input_statistics_and_old_ones_still_load() -> None:
    ref = _drift_reference()
    assert ref.inputs is not None and len(ref.inputs.class_counts) == 10 and sum(ref.inputs.class_counts) == 40
    back = p.DriftReference.model_validate_json(ref.model_dump_json())
    assert back == ref and back.summary() == ref.summary() and back.summary().inputs is not None
    old = json.loads(ref.model_dump_json())
    del old["inputs"]  # a reference made before input statistics
    assert p.DriftReference.model_validate(old).summary().inputs is None


def test_a_drift_reference_with_inconsistent_input_statistics_is_refused() -> None:
    ref = json.loads(_drift_reference().model_dump_json())
    bad_rows = {**ref, "inputs": {**ref["inputs"], "class_mean": ref["inputs"]["class_mean"][:-1]}}
    bad_names = {**ref, "inputs": {**ref["inputs"], "names": ["red"] * len(ref["inputs"]["names"])}}
    other_classes = {**ref, "class_hist": [0.5, 0.5]}
    for bad in (bad_rows, bad_names, other_classes):
        with pytest.raises(ValueError):
            p.DriftReference.model_validate(bad)


def test_drift_stats_from_devices_before_the_split_still_validate() -> None:
    old = {"score": 23.8, "threshold": 1.0, "drifted": True, "n_images": 500, "psi_confidence": 0.4,
           "psi_class": 5.95, "channel_shift": 0.3, "detail_shift": 0.2}  # fmt: skip
    s = p.DriftStats.model_validate(old)
    assert s.input_drift is None and s.label_drift is None and s.input_shifts is None
    new = p.DriftStats(**{**old, "score": 0.3, "drifted": False}, input_drift=0.3, label_drift=23.8,
                       input_shifts={"fine_detail": 0.15})  # fmt: skip
    assert p.DriftStats.model_validate_json(new.model_dump_json()) == new
    with pytest.raises(ValueError):
        p.DriftStats(**old, input_shifts={"Not A Name!": 1.0})
