"""Valid telemetry wire objects for the fleet tests."""

from __future__ import annotations

from shared import protocol as p

REF = p.ReleaseRef(name="r20", version="1.0.0")


def drift_stats(score: float = 0.2, threshold: float = 1.0, **kw: object) -> p.DriftStats:
    data: dict[str, object] = {
        "score": score, "threshold": threshold, "drifted": score >= threshold, "n_images": 500,
        "psi_confidence": score / 4, "psi_class": 0.1, "channel_shift": score / 2, "detail_shift": 0.05,
        "input_drift": score, "label_drift": 0.4, "input_shifts": {"fine_detail": score / 2},
    }  # fmt: skip
    data.update(kw)
    return p.DriftStats(**data)


def telemetry_report(device: str = "d1", **kw: object) -> p.TelemetryReport:
    data: dict[str, object] = {
        "device_id": device, "release": REF, "runtime": "onnxruntime", "precision": "fp32", "window_s": 30.0,
        "requests": 300, "errors": {"not_an_image": 2}, "throughput_ips": 10.0,
        "latency_ms": p.LatencyStats(p50=4.0, p90=6.0, p99=9.0, max=12.0, mean=4.5), "mean_batch": 3.5,
        "mean_queue_depth": 1.5, "max_queue_depth": 7, "drift": drift_stats(),
    }  # fmt: skip
    data.update(kw)
    return p.TelemetryReport(**data)


def calibration_report(device: str = "d1", **kw: object) -> p.CalibrationReport:
    """A labelled re-calibration that went from 62% to 81% top-1 and was promoted."""
    data: dict[str, object] = {
        "device_id": device, "release": REF, "method": "percentile", "source": "reservoir", "n_images": 150,
        "n_eval": 200, "evaluation": "labelled", "top1_before": 0.62, "top1_after": 0.81, "precision_before": "int8",
        "form": "u8s8_reduce_range", "form_reason": "AVX2 without VNNI", "artifact": "device-int8-x.onnx",
        "calibration_s": 1.5, "build_s": 0.3, "better": True, "promoted": True,
        "moved_ranges": (p.RangeShift(tensor="conv1", before=0.5, after=4.0, change=7.0),),
    }  # fmt: skip
    data.update(kw)
    return p.CalibrationReport(**data)


def recalibrate_command(device: str = "d1", **kw: object) -> p.RecalibrateCommand:
    return p.RecalibrateCommand(device_id=device, **kw)
