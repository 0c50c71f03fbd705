"""The demo's field stage: one agent serves shifted images, is flagged as drifted, and is re-calibrated.

The images are the golden set through the ``night`` shift preset (``host.factory.field.shift``),
sent to the agent's local inference API with ``loadgen``; its TelemetryReports carry the drift score
to the host; then the host sends ``recalibrate`` (from the agent's field-sample reservoir, judged on
the labelled night copy), and the device verifies the new INT8 engine against the old and promotes it
only if it is not worse.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from device.serving.loadgen import loadgen
from host.factory.field.shift import shift_dataset
from host.fleet.recalibration.service import RecalibrateRequest
from host.fleet.server import HostServer
from host.fleet.store.calibration_records import RECALIBRATION_DONE, RecalibrationRecord
from host.fleet.store.records import DriftFlag
from shared.errors import EdgeloopError
from shared.samples import golden_dir

FLEET = "demo"


@dataclass
class FieldOutcome:
    device: str
    drift_before: float | None
    drift_after: float
    record: RecalibrationRecord


T = TypeVar("T")


def _wait(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(0.25)
    raise EdgeloopError(f"timed out after {timeout:.0f}s waiting for {what}")


def _drift(server: HostServer, device: str) -> DriftFlag | None:
    d = next((x for x in server.store.fleet(FLEET) if x.device_id == device), None)
    return d.drift if d is not None else None


def _drifted(server: HostServer, device: str) -> DriftFlag | None:
    d = _drift(server, device)
    return d if d is not None and d.drifted else None


def _done(server: HostServer, command_id: str) -> RecalibrationRecord | None:
    r = server.store.recalibration(command_id)
    return r if r is not None and r.state in RECALIBRATION_DONE else None


def run_field(server: HostServer, workdir: Path, device: str, url: str) -> FieldOutcome:
    print(f"3) the field: {device} serves night-time images (the 'night' shift of the golden set)")
    night = workdir / "field" / "night"
    if not night.exists():
        shift_dataset(golden_dir(), night, "night", seed=0)
    clean = loadgen(url, golden_dir(), concurrency=4)
    before = _wait(lambda: _drift(server, device), 30, "the clean drift score")
    shifted = loadgen(url, night, concurrency=4)
    if clean["errors"] or shifted["errors"]:
        raise EdgeloopError(f"serving failed: {clean['errors']} + {shifted['errors']} errors")
    flagged = _wait(lambda: _drifted(server, device), 30, f"{device} flagged as drifted")
    print(
        f"  served {clean['requests']} clean, then {shifted['requests']} night images over HTTP: input drift "
        f"{before.score:.2f} -> {flagged.score:.2f} (threshold {flagged.threshold:.1f}): DRIFTED"
    )
    print(f"4) re-calibrate {device}'s INT8 engine on its field reservoir, verify on labelled night images")
    request = RecalibrateRequest(device=device, fleet=FLEET, n_images=150, eval_dir=str(night), promote="auto")
    sent, _ = server.recalibrations.start(request)
    record = _wait(lambda: _done(server, sent[0].command_id), 120, "the recalibration outcome")
    return FieldOutcome(device, before.score, flagged.score, record)


def print_field(outcome: FieldOutcome) -> None:
    from host.table import print_table

    r = outcome.record
    o = r.outcome
    if o is None:
        raise EdgeloopError(f"recalibration of {outcome.device} ended without a report: {r.error}")
    print_table(
        f"field re-calibration of {outcome.device} ({r.state})",
        ["", "INT8 engine", "night top-1 %", "evaluated on"],
        [
            ("before", f"{o.precision_before} (release calibration)", 100 * (o.top1_before or 0), f"{o.n_eval} images"),
            (
                "after",
                f"int8 {o.form} (field calibration, {o.n_images} images)",
                100 * (o.top1_after or 0),
                "promoted" if o.promoted else "kept the old engine (not better)",
            ),
        ],
    )
