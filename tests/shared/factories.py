"""Valid wire objects for tests."""

from __future__ import annotations

from shared import protocol as p


def model_info(**kw: object) -> p.ModelInfo:
    data: dict[str, object] = {
        "arch": "resnet20",
        "classes": tuple(f"c{i}" for i in range(10)),
        "preprocessing": p.PreprocessingSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        "source_top1": 0.91,
    }
    data.update(kw)
    return p.ModelInfo(**data)


def manifest(version: str = "1.0.0", **kw: object) -> p.ReleaseManifest:
    data: dict[str, object] = {
        "name": "r20",
        "version": version,
        "model": model_info(),
        "artifacts": (p.Artifact(name="m.onnx", url="artifacts/m.onnx", sha256="a" * 64, size=10, precision="fp32"),),
    }
    data.update(kw)
    return p.ReleaseManifest(**data)


def benchmark_report(device: str = "d1", **kw: object) -> p.BenchmarkReport:
    data: dict[str, object] = {
        "device_id": device, "runtime": "onnxruntime", "precision": "int8", "batch": 1, "iterations": 10,
        "latency_ms": p.LatencyStats(p50=1, p90=2, p99=3, max=4, mean=1.5), "raw_throughput_ips": 500.0,
    }  # fmt: skip
    data.update(kw)
    return p.BenchmarkReport(**data)
