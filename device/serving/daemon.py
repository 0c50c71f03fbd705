"""Serving inside the agent daemon: the inference server, its reservoir and frame source, fed with the
engine of every activation, and the telemetry the agent reports from it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from device.engine.runtimes.base import Runtime
from device.serving import sources
from device.serving.batcher import Answer
from device.serving.config import InferenceConfig
from device.serving.model import ServedModel
from device.serving.reporting import telemetry_report
from device.serving.reservoir import Reservoir
from device.serving.server import InferenceServer
from shared.imaging import Preprocessing
from shared.protocol import ClassificationResult, Precision, ReleaseManifest, ReleaseRef, TelemetryReport

log = logging.getLogger(__name__)

PublishResult = Callable[[ClassificationResult], None]


class AgentServing:
    def __init__(self, config: InferenceConfig, state_dir: Path, device_id: str) -> None:
        self.config, self.device_id = config, device_id
        r = config.reservoir
        self.reservoir = (
            Reservoir(r.directory or state_dir / "reservoir", capacity=r.capacity, max_mb=r.max_mb)
            if r is not None
            else None
        )
        self.server = InferenceServer(config, self.reservoir)
        self.source: sources.FrameSource | None = None

    def start(self, publish_result: PublishResult) -> None:
        self.server.start()
        if self.config.source is not None:

            def publish(name: str, frame: int, answer: Answer) -> None:
                publish_result(
                    ClassificationResult(
                        device_id=self.device_id,
                        source=name[:256],
                        frame=frame,
                        label=answer.label,
                        index=answer.index,
                        confidence=answer.confidence,
                        top=tuple(answer.top),
                        latency_ms=answer.latency_ms,
                        release=answer.release,
                    )
                )

            self.source = sources.create(
                self.config.source, self.server.classify_sync, publish, self.server.count_error
            )
            self.source.start()

    def serve(self, runtime: Runtime, manifest: ReleaseManifest) -> None:
        """The engine manager's swap hook: serve ``runtime`` from now on; the old one closes when idle."""
        p = manifest.model.preprocessing
        reference = manifest.model.reference.summary() if manifest.model.reference is not None else None
        self.server.serve(
            ServedModel(
                runtime,
                manifest.model.classes,
                Preprocessing(mean=p.mean, std=p.std, size=p.size),
                str(manifest.ref),
                reference,
                on_retire=Runtime.close,
            )
        )

    def telemetry(
        self, release: ReleaseRef | None, runtime: str | None, precision: Precision | None
    ) -> TelemetryReport | None:
        """The report of the interval that ends now; None when nothing happened in it."""
        report = telemetry_report(self.server, self.device_id, release, runtime, precision)
        return report if report.requests or report.errors else None

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
        self.server.stop()
