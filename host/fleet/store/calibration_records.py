"""Field re-calibration as the store hands it back: the commands the host sent, their outcomes, their states.

A ``recalibrate`` command is stored before it is published (``RecalibrationRecord``); the device
answers with a ``CalibrationReport`` (flattened into a ``CalibrationRecord``), or, when it could not
even start, with an error event for the command. The state of a recalibration is derived from those,
and defined here once:

* ``unsent``: stored, the broker has not taken it yet (the host re-sends it);
* ``sent``: published, no answer yet;
* ``failed``: the device refused or could not do it (a bad calibration set, no release, ...); the
  running engine stays;
* ``rejected``: ``--promote auto`` and the new engine was worse, so the old one stays;
* ``kept``: ``--promote manual``: verified and kept on the device for a later ``recalibrate promote``;
* ``promoted``: the new engine runs (auto, or a kept calibration that a promote command swapped in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, field_serializer

from shared.protocol import Precision, RangeShift, RecalibrateCommand, ReleaseRef

RecalibrationState: TypeAlias = Literal["unsent", "sent", "failed", "rejected", "kept", "promoted"]
RECALIBRATION_DONE: frozenset[RecalibrationState] = frozenset({"failed", "rejected", "kept", "promoted"})
GATE_CODES = ("int8_verification_failed", "int8_requantized", "int8_unverified")  # device.activation.int8


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    """One CalibrationReport (the ``calibrations`` table): old and new figures, how they were compared."""

    message_id: str
    command_id: str | None
    fleet: str
    device_id: str
    rollout_id: str | None
    action: Literal["calibrate", "promote"]
    release_name: str
    release_version: str
    method: str
    source: str
    n_images: int
    n_eval: int
    evaluation: Literal["labelled", "agreement", "none"]
    top1_before: float | None
    top1_after: float | None
    agreement_before: float | None
    agreement_after: float | None
    precision_before: Precision | None
    form: str | None
    form_reason: str | None
    artifact: str | None
    calibration_s: float | None
    build_s: float | None
    moved_ranges: tuple[RangeShift, ...]
    better: bool | None
    promoted: bool
    error: str | None
    sent_at: datetime
    received_at: datetime

    @property
    def before(self) -> float | None:
        """The old engine's figure: top-1 on a labelled set, else agreement with FP32."""
        return self.top1_before if self.evaluation == "labelled" else self.agreement_before

    @property
    def after(self) -> float | None:
        return self.top1_after if self.evaluation == "labelled" else self.agreement_after


@dataclass(frozen=True, slots=True)
class RecalibrationRecord:
    """A recalibrate command the host sent, with what became of it."""

    command_id: str
    fleet: str
    device_id: str
    action: Literal["calibrate", "promote"]
    promote: bool
    calibration_id: str | None
    release_name: str | None
    release_version: str | None
    command: RecalibrateCommand
    published: bool
    created_at: datetime
    outcome: CalibrationRecord | None = None  # the device's CalibrationReport
    error_event: str | None = None  # an error event for the command when no report came
    promoted_by: str | None = None  # a kept calibration: the promote command that swapped it in

    @property
    def release(self) -> ReleaseRef | None:
        if not self.release_name or not self.release_version:
            return None
        return ReleaseRef(name=self.release_name, version=self.release_version)

    @property
    def error(self) -> str | None:
        """Why it failed: the report's error, else (no report came) an error event for the command."""
        return self.outcome.error if self.outcome is not None else self.error_event

    @property
    def state(self) -> RecalibrationState:
        if self.promoted_by is not None:
            return "promoted"
        if self.outcome is None:
            return "failed" if self.error_event is not None else "sent" if self.published else "unsent"
        return report_state(self.outcome, self.promote)


def report_state(c: CalibrationRecord, promote: bool | None = None) -> RecalibrationState:
    """What a CalibrationReport says became of its command; ``promote``: the command's (None: unknown,
    a command this host did not send, so a worse engine that was not promoted reads as rejected)."""
    if c.promoted:
        return "promoted"
    if c.error is not None or c.action == "promote":  # a promote that did not promote failed
        return "failed"
    if promote is None:
        return "rejected" if c.better is False else "kept"
    return "rejected" if promote else "kept"


def _iso(at: datetime) -> str:
    return at.isoformat()


class CalibrationFlag(BaseModel):
    """A device's latest calibration outcome (the fleet view's ``calibration`` field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: str | None
    action: Literal["calibrate", "promote"]
    state: RecalibrationState
    release: str
    evaluation: Literal["labelled", "agreement", "none"]
    before: float | None  # top-1 (labelled) or agreement with FP32 (agreement), old engine
    after: float | None  # the same, new engine
    better: bool | None
    promoted: bool
    error: str | None
    at: datetime  # when the device sent it

    @field_serializer("at")
    def _at(self, at: datetime) -> str:  # like every other time of the API (web.encode)
        return _iso(at)

    @classmethod
    def of(
        cls, c: CalibrationRecord, state: RecalibrationState, figures: CalibrationRecord | None = None
    ) -> CalibrationFlag:
        """``figures``: for a promote, the calibration it swapped in (whose before and after these are)."""
        f = figures or c
        return cls(
            command_id=c.command_id,
            action=c.action,
            state=state,
            release=f"{c.release_name}@{c.release_version}",
            evaluation=f.evaluation,
            before=f.before,
            after=f.after,
            better=f.better,
            promoted=c.promoted,
            error=c.error,
            at=c.sent_at,
        )


class GateEvent(BaseModel):
    """A device's latest event of the INT8 gate at activation (the fleet view's ``int8_gate`` field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str  # int8_verification_failed | int8_requantized | int8_unverified
    level: str
    message: str
    release: str | None
    at: datetime

    @field_serializer("at")
    def _at(self, at: datetime) -> str:
        return _iso(at)
