"""``[inference]`` of agent.toml: the local inference API, its batching, telemetry, drift and reservoir."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import drift, imaging
from shared.httpserver import HttpLimits


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftConfig(_Section):
    window: int = Field(500, ge=10, le=100_000, description="served images the drift score is taken over")
    min_images: int = Field(100, ge=1, le=100_000, description="no score before this many images")
    threshold: float = Field(
        drift.DEFAULT_THRESHOLD, gt=0, le=1000, description="input drift that flags (label drift never flags)"
    )


class ReservoirConfig(_Section):
    """Opt-in: keep a uniform sample of served images (reservoir sampling) for `sample` / `recalibrate`."""

    capacity: int = Field(1000, ge=1, le=1_000_000, description="images kept")
    max_mb: float = Field(64.0, gt=0, le=100_000, description="disk cap; larger images are not kept")
    directory: Path | None = Field(None, description="default: STATE_DIR/reservoir")


class VideoSource(_Section):
    """OpenCV VideoCapture: a camera index, a video file or an RTSP/HTTP stream URL."""

    type: Literal["video"] = "video"
    uri: str = Field(description="camera index ('0'), file path or rtsp:// URL")
    fps: float = Field(5.0, gt=0, le=1000, description="frames per second to classify (others are skipped)")
    loop: bool = Field(False, description="start a video file over at its end")


class DirectorySource(_Section):
    """A watched folder: every new image file that appears is classified once."""

    type: Literal["directory"] = "directory"
    path: Path
    fps: float = Field(10.0, gt=0, le=1000, description="at most this many files per second")
    delete_after: bool = Field(False, description="remove a file once it has been classified")
    settle_s: float = Field(0.5, ge=0, le=3600, description="a file is read once unchanged this long")


SourceConfig = Annotated[VideoSource | DirectorySource, Field(discriminator="type")]


class InferenceConfig(_Section):
    listen: str = Field("127.0.0.1:8600", description="HOST:PORT of the local inference API (loopback by default)")
    max_batch: int = Field(64, ge=1, le=4096, description="dynamic batching: most requests per batch")
    max_delay_ms: float = Field(2.0, ge=0, le=1000, description="dynamic batching: longest wait for a fuller batch")
    max_queue: int = Field(2048, ge=1, le=1_000_000, description="waiting requests beyond this get 503")
    max_body_kb: int = Field(4096, ge=1, le=1_048_576, description="largest accepted image upload")
    max_image_pixels: int = Field(
        imaging.MAX_PIXELS,
        ge=1,
        le=imaging.PIXEL_CEILING,
        description="largest image, width x height, read from its header before decoding (413 above)",
    )
    decode_threads: int = Field(2, ge=1, le=64, description="images decoded at once, off the event loop")
    http: HttpLimits = Field(HttpLimits(), description="connections, request head and body bounds of the API")
    telemetry_interval_s: float = Field(30.0, ge=1, le=86400, description="one TelemetryReport per interval")
    stats_window_s: float = Field(60.0, ge=1, le=3600, description="sliding window of GET /v1/stats")
    telemetry: bool = Field(True, description="latency histograms, counters and drift (off only to measure them)")
    drift: DriftConfig = DriftConfig()
    reservoir: ReservoirConfig | None = Field(None, description="field-sample reservoir (off unless set)")
    source: SourceConfig | None = Field(None, description="a camera/video/folder to classify continuously")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen {v!r} must be HOST:PORT, e.g. 127.0.0.1:8600")
        return v

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def loopback(self) -> bool:
        host = self.host_port()[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"
