"""What a rollout is asked to do: its waves, gates and timeouts (``RolloutConfig``), and how waves are cut.

This sits beside ``rollout/`` rather than inside it because the store's rollout record carries the
config (``RolloutRecord.config``) and the controller reads the store: a config inside ``rollout/``
would make ``store`` and ``rollout`` import each other.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import protocol
from shared.errors import EdgeloopError
from shared.protocol import BenchSettings


class RolloutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waves: list[str] = Field(
        default_factory=lambda: ["1", "25%", "100%"],
        description="cumulative targets: a device count or a percentage of the fleet (or of `devices`)",
    )
    devices: list[str] | None = Field(
        None,
        min_length=1,
        max_length=100_000,
        description="only these devices of the fleet (e.g. a canary to the one that drifted); default: all",
    )
    max_accuracy_drop: float = Field(0.5, ge=0, le=100, description="points of top-1 below the source model")
    p99_budget_ms: float | None = Field(None, gt=0, description="p99 latency budget at batch 1")
    abort_failures: float = Field(0.10, ge=0, le=1, description="failure fraction of a wave that aborts")
    wave_timeout_s: float = Field(600, gt=0)
    command_resend_s: float = Field(
        30, ge=1, le=3600, description="a deploy the device has not answered in this long is sent again (then 2x, 4x)"
    )
    precision: protocol.Precision | None = None
    bench: BenchSettings = BenchSettings()

    @field_validator("waves")
    @classmethod
    def _waves(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one wave")
        for w in v:
            parse_target(w, 100)
        return v


def parse_target(spec: str, fleet_size: int) -> int:
    """'1' -> 1 device; '25%' -> ceil(25% of the fleet), at least 1."""
    s = spec.strip()
    try:
        if s.endswith("%"):
            pct = float(s[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, math.ceil(fleet_size * pct / 100))
        n = int(s)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise ValueError(f"wave {spec!r} must be a device count >= 1 or a percentage in (0, 100]") from None


def parse_duration(text: str) -> float:
    """'600', '90s', '10m', '1h' -> seconds."""
    t = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:])
    try:
        return float(t[:-1]) * mult if mult else float(t)
    except ValueError:
        raise EdgeloopError(f"duration {text!r} must look like 600, 90s, 10m or 1h") from None


def plan_waves(device_ids: list[str], specs: list[str]) -> list[list[str]]:
    """Split devices into waves by cumulative targets; empty waves are dropped."""
    waves, done = [], 0
    n = len(device_ids)
    for spec in specs:
        target = min(n, parse_target(spec, n))
        if target > done:
            waves.append(device_ids[done:target])
            done = target
    return waves
