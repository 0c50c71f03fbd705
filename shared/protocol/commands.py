"""Host -> device commands: a discriminated union on ``kind``."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, TypeAlias

from pydantic import Field, model_validator

from shared.protocol.base import Id, Message, Precision, WireModel
from shared.protocol.releases import ReleaseManifest, ReleaseRef


class BenchSettings(WireModel):
    warmup: int = Field(20, ge=0, le=10000)
    iterations: int = Field(200, ge=1, le=100000)
    batch: int = Field(1, ge=1, le=4096)
    throughput_batch: int = Field(64, ge=1, le=4096)
    throughput_rounds: int = Field(3, ge=1, le=20, description="raw throughput rounds; the report has their median")
    evaluate: bool = Field(True, description="also measure top-1 on the device's labelled eval set")
    eval_limit: int | None = Field(None, ge=1, le=1_000_000, description="evaluate on at most this many images")
    max_seconds: float = Field(
        120.0, gt=0, le=3600, description="the whole benchmark stops by then, so later commands never wait long"
    )


class SignedCommand(Message):
    """A command the host signed: ed25519 over its canonical JSON without ``signature`` (shared.signing).

    A device refuses an unsigned or forged command, rollbacks included, and one whose ``sent_at`` is
    outside its clock-skew window (device config).
    """

    key_id: str | None = Field(None, max_length=64)
    signature: str | None = Field(None, max_length=256, description="base64 ed25519 signature")


class DeployCommand(SignedCommand):
    kind: Literal["deploy"] = "deploy"
    manifest: ReleaseManifest
    base_url: str | None = Field(None, max_length=2048, description="resolves relative artifact URLs")
    rollout_id: Id | None = None
    precision: Precision | None = Field(None, description="force a precision; default: the best the device runs")
    bench: BenchSettings = BenchSettings()


class BenchmarkCommand(SignedCommand):
    kind: Literal["benchmark"] = "benchmark"
    bench: BenchSettings = BenchSettings()
    rollout_id: Id | None = None


class RecalibrateCommand(SignedCommand):
    """Re-quantize the running release's FP32 model on field images, verify it, and (auto) promote it.

    ``action = "promote"`` instead swaps in the engine an earlier ``manual`` calibration kept.
    """

    kind: Literal["recalibrate"] = "recalibrate"
    action: Literal["calibrate", "promote"] = "calibrate"
    n_images: int = Field(1024, ge=32, le=100000, description="field images to calibrate on (the rest verify)")
    method: Literal["minmax", "entropy", "percentile"] = "percentile"
    source: Literal["reservoir", "local", "url"] = Field(
        "reservoir", description="the field-sample reservoir, a folder on the device, or a set the host serves"
    )
    calib_dir: str | None = Field(None, max_length=1024, description="source 'local': a folder on the device")
    calib_url: str | None = Field(None, max_length=2048, pattern=r"^https?://", description="source 'url': a .tar(.gz)")
    eval_dir: str | None = Field(None, max_length=1024, description="labelled set on the device (default: eval_dir)")
    promote: bool = Field(True, description="auto: activate the new engine if it is not worse; False: keep it")
    calibration_id: uuid.UUID | None = Field(None, description="action 'promote': the calibration command to promote")
    base_url: str | None = Field(None, max_length=2048, description="resolves the release's artifact URLs")
    rollout_id: Id | None = None

    @model_validator(mode="after")
    def _source(self) -> RecalibrateCommand:
        if self.source == "local" and not self.calib_dir:
            raise ValueError("source 'local' needs calib_dir")
        if self.source == "url" and not self.calib_url:
            raise ValueError("source 'url' needs calib_url")
        if self.action == "promote" and self.calibration_id is None:
            raise ValueError("action 'promote' needs calibration_id")
        return self


class RollbackCommand(SignedCommand):
    kind: Literal["rollback"] = "rollback"
    target: ReleaseRef | None = Field(None, description="release to return to; default: the previous one")
    manifest: ReleaseManifest | None = Field(None, description="the target's manifest, if not cached")
    base_url: str | None = Field(None, max_length=2048)
    rollout_id: Id | None = None
    reason: str = Field("", max_length=1024)


class SampleCommand(SignedCommand):
    kind: Literal["sample"] = "sample"
    n_images: int = Field(16, ge=1, le=1000)
    upload_url: str = Field(max_length=2048, pattern=r"^https?://")


Command: TypeAlias = Annotated[
    DeployCommand | BenchmarkCommand | RecalibrateCommand | RollbackCommand | SampleCommand,
    Field(discriminator="kind"),
]
COMMAND_KINDS = ("deploy", "benchmark", "recalibrate", "rollback", "sample")
