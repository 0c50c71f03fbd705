"""Host -> device commands: a discriminated union on ``kind``."""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import (
    Field,
)

from shared.protocol.base import Id, Message, Precision, WireModel
from shared.protocol.releases import ReleaseManifest, ReleaseRef


class BenchSettings(WireModel):
    warmup: int = Field(20, ge=0, le=10000)
    iterations: int = Field(200, ge=1, le=100000)
    batch: int = Field(1, ge=1, le=4096)
    throughput_batch: int = Field(64, ge=1, le=4096)
    throughput_rounds: int = Field(3, ge=1, le=20, description="raw throughput rounds; the report has their median")
    evaluate: bool = Field(True, description="also measure top-1 on the device's labelled eval set")
    eval_limit: int | None = Field(None, ge=1, description="evaluate on at most this many images")


class DeployCommand(Message):
    kind: Literal["deploy"] = "deploy"
    manifest: ReleaseManifest
    base_url: str | None = Field(None, description="resolves relative artifact URLs")
    rollout_id: Id | None = None
    precision: Precision | None = Field(None, description="force a precision; default: the best the device runs")
    bench: BenchSettings = BenchSettings()


class BenchmarkCommand(Message):
    kind: Literal["benchmark"] = "benchmark"
    bench: BenchSettings = BenchSettings()
    rollout_id: Id | None = None


class RecalibrateCommand(Message):
    kind: Literal["recalibrate"] = "recalibrate"
    n_images: int = Field(256, ge=8, le=100000)
    method: Literal["minmax", "entropy", "percentile"] = "percentile"
    adapt_bn: bool = True
    promote: bool = Field(True, description="activate the recalibrated engine if it verifies")


class RollbackCommand(Message):
    kind: Literal["rollback"] = "rollback"
    target: ReleaseRef | None = Field(None, description="release to return to; default: the previous one")
    manifest: ReleaseManifest | None = Field(None, description="the target's manifest, if not cached")
    base_url: str | None = None
    rollout_id: Id | None = None
    reason: str = Field("", max_length=1024)


class SampleCommand(Message):
    kind: Literal["sample"] = "sample"
    n_images: int = Field(16, ge=1, le=1000)
    upload_url: str = Field(pattern=r"^https?://")


Command: TypeAlias = Annotated[
    DeployCommand | BenchmarkCommand | RecalibrateCommand | RollbackCommand | SampleCommand,
    Field(discriminator="kind"),
]
COMMAND_KINDS = ("deploy", "benchmark", "recalibrate", "rollback", "sample")
