"""Field re-calibration from the host: ``recalibrate`` commands to devices, stored before they are published.

``start`` sends one ``RecalibrateCommand`` to a device, or to every online device of a fleet that
runs a release; ``promote`` swaps in a calibration a device kept (``--promote manual``). Each command
is written to the store first and then published; one the broker did not take is re-sent by a
background loop with the same message id (a duplicate the device drops), as rollout commands are.
The device answers with a ``CalibrationReport`` that ingest stores; the record's ``state`` says
what became of it (``host.fleet.store.calibration_records``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from host.fleet.recalibration.sets import CalibrationSets
from host.fleet.rollout.commands import Publish
from host.fleet.rollout.controller import ControllerLease, SingleProcess
from host.fleet.signer import CommandSigner
from host.fleet.store import Store
from host.fleet.store.calibration_records import RecalibrationRecord
from host.fleet.store.records import DeviceRecord
from shared import protocol
from shared.errors import EdgeloopError
from shared.protocol import RecalibrateCommand

log = logging.getLogger(__name__)

SETS_PATH = "calibration-sets/"  # where the server serves packed sets, under its base URL
RESEND_AFTER_S = 2.0  # younger unpublished commands are still being sent by the request that stored them


class RecalibrationError(EdgeloopError):
    """A recalibration the host will not send (``status`` is the HTTP answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RecalibrateRequest(BaseModel):
    """What ``POST /api/v1/recalibrations`` takes: a device (or a whole fleet) and how to re-calibrate."""

    model_config = ConfigDict(extra="forbid")

    device: protocol.Id | None = Field(None, description="one device; without it, every online device of `fleet`")
    fleet: protocol.Id | None = Field(None, description="the device's fleet (default: the one it is known in)")
    n_images: int = Field(1024, ge=32, le=100000, description="field images to calibrate on (the rest verify)")
    method: Literal["minmax", "entropy", "percentile"] = "percentile"
    source: Literal["reservoir", "local", "url"] | None = Field(
        None, description="default: url with calib_data, local with calib_dir, else the device's reservoir"
    )
    calib_dir: str | None = Field(None, max_length=1024, description="source local: a folder on the device")
    calib_data: str | None = Field(None, max_length=4096, description="source url: a folder on the host, served")
    eval_dir: str | None = Field(None, max_length=1024, description="a labelled folder on the device")
    promote: Literal["auto", "manual"] = Field("auto", description="auto: swap in the new engine if not worse")

    @model_validator(mode="after")
    def _check(self) -> RecalibrateRequest:
        if self.device is None and self.fleet is None:
            raise ValueError("name a device, or a fleet to re-calibrate all of it")
        if self.source is None:
            self.source = "url" if self.calib_data else "local" if self.calib_dir else "reservoir"
        if (self.source == "local") != bool(self.calib_dir):
            raise ValueError("calib_dir (a folder on the device) goes with source 'local', and only with it")
        if (self.source == "url") != bool(self.calib_data):
            raise ValueError(
                "calib_data (a folder on the host, which serves it) goes with source 'url', and only with it"
            )
        return self


class Recalibrations:
    def __init__(
        self,
        store: Store,
        publish: Publish,
        sets: CalibrationSets,
        base_url: str,
        signer: CommandSigner | None = None,
        tick_s: float = 1.0,
        lease: ControllerLease | None = None,
    ) -> None:
        """``lease``: with several replicas, only the controller lease's holder re-sends."""
        self.store, self.publish, self.sets, self.base_url = store, publish, sets, base_url
        self.lease: ControllerLease = lease or SingleProcess()
        self.signer = signer or CommandSigner(None)
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recalibrations", daemon=True)

    # -- sending ------------------------------------------------------------------------------
    def start(self, req: RecalibrateRequest) -> tuple[list[RecalibrationRecord], list[dict[str, str]]]:
        """Send the command to each target; returns what was sent and the devices skipped (and why)."""
        targets, skipped = self._targets(req)
        calib_url = None
        if req.calib_data:
            calib_url = self.base_url + SETS_PATH + self.sets.pack(Path(req.calib_data).expanduser().resolve())
        sent = []
        for d in targets:
            cmd = RecalibrateCommand(
                device_id=d.device_id,
                n_images=req.n_images,
                method=req.method,
                source=req.source or "reservoir",
                calib_dir=req.calib_dir,
                calib_url=calib_url,
                eval_dir=req.eval_dir,
                promote=req.promote == "auto",
                base_url=self.base_url,
            )
            sent.append(self._send(d, cmd))
        return sent, skipped

    def promote(self, command_id: str) -> RecalibrationRecord:
        """Swap in the engine that the calibration ``command_id`` kept on its device."""
        r = self.store.recalibration(_uuid(command_id))
        if r is None:
            raise RecalibrationError(404, f"no recalibration {command_id}")
        if r.action != "calibrate" or r.state != "kept":
            why = "it is a promote" if r.action == "promote" else f"it is {r.state}"
            raise RecalibrationError(409, f"recalibration {command_id} kept no engine to promote: {why}")
        device = self._device(r.fleet, r.device_id)
        made_for = f"{r.outcome.release_name}@{r.outcome.release_version}" if r.outcome else None
        runs = f"{device.release_name}@{device.release_version}"
        if made_for != runs:  # the device keeps an INT8 file of the model it ran then
            raise RecalibrationError(
                409, f"calibration {command_id} was made for {made_for}; {r.fleet}/{r.device_id} now runs {runs}"
            )
        cmd = RecalibrateCommand(
            device_id=r.device_id, action="promote", calibration_id=uuid.UUID(r.command_id), base_url=self.base_url
        )
        return self._send(device, cmd)

    def promote_latest(self, fleet: str | None, device: str, calibration_id: str | None = None) -> RecalibrationRecord:
        """Promote ``calibration_id``, or the device's latest kept calibration of the release it runs."""
        d = self._device(fleet, device)
        if calibration_id is not None:
            found = self.store.recalibration(_uuid(calibration_id))
            if found is None or (found.fleet, found.device_id) != (d.fleet, d.device_id):
                raise RecalibrationError(404, f"no recalibration {calibration_id} of {d.fleet}/{d.device_id}")
            return self.promote(found.command_id)
        runs = (d.release_name, d.release_version)
        for r in self.store.recalibrations(d.fleet, d.device_id):  # newest first
            if (
                r.state == "kept"
                and r.outcome is not None
                and (r.outcome.release_name, r.outcome.release_version) == runs
            ):
                return self.promote(r.command_id)
        raise RecalibrationError(
            409,
            f"{d.fleet}/{d.device_id} keeps no calibration of {d.release_name}@{d.release_version}: "
            "run `edgeloop recalibrate DEVICE --promote manual` first",
        )

    def _send(self, d: DeviceRecord, cmd: RecalibrateCommand) -> RecalibrationRecord:
        cmd = self.signer.sign(cmd)  # signed before it is stored: a re-send is the same signed command
        release = protocol.ReleaseRef(name=d.release_name, version=d.release_version) if d.release_name else None
        self.store.add_recalibration(d.fleet, cmd, release)  # first: a resumed host re-sends this same message id
        if self.publish(protocol.command_topic(d.fleet, d.device_id), protocol.encode(cmd)):
            self.store.mark_recalibration_published(str(cmd.message_id))
        else:
            log.warning("the broker did not take recalibrate %s for %s/%s; re-sending", cmd.message_id, d.fleet,
                        d.device_id)  # fmt: skip
        record = self.store.recalibration(str(cmd.message_id))
        if record is None:  # pragma: no cover - it was stored above
            raise EdgeloopError(f"recalibration {cmd.message_id} vanished from the store")
        return record

    # -- targets --------------------------------------------------------------------------------
    def _device(self, fleet: str | None, device: str) -> DeviceRecord:
        found = [d for d in self.store.devices(fleet) if d.device_id == device]
        if not found:
            where = f" in fleet {fleet!r}" if fleet else ""
            raise RecalibrationError(404, f"the host knows no device {device!r}{where}; see `edgeloop fleet status`")
        if len(found) > 1:
            fleets = ", ".join(sorted(d.fleet for d in found))
            raise RecalibrationError(400, f"device {device!r} is in fleets {fleets}; name its fleet")
        d = found[0]
        if (why := _unfit(d)) is not None:
            raise RecalibrationError(409, f"{d.fleet}/{d.device_id} {why}")
        return d

    def _targets(self, req: RecalibrateRequest) -> tuple[list[DeviceRecord], list[dict[str, str]]]:
        if req.device is not None:
            return [self._device(req.fleet, req.device)], []
        members = self.store.devices(req.fleet)
        if not members:
            raise RecalibrationError(404, f"fleet {req.fleet!r} has no known devices")
        skipped = [{"device_id": d.device_id, "reason": why} for d in members if (why := _unfit(d)) is not None]
        targets = [d for d in members if _unfit(d) is None]
        if not targets:
            raise RecalibrationError(409, f"no device of fleet {req.fleet!r} can re-calibrate now: {skipped}")
        return targets, skipped

    # -- re-sending -----------------------------------------------------------------------------
    def republish(self) -> int:
        """Re-send every stored command the broker has not taken; returns how many it took now."""
        n = 0
        for fleet, cmd in self.store.unpublished_recalibrations(older_than_s=RESEND_AFTER_S):
            if self.publish(protocol.command_topic(fleet, cmd.device_id), protocol.encode(cmd)):
                self.store.mark_recalibration_published(str(cmd.message_id))
                log.info("re-sent stored recalibrate %s to %s/%s", cmd.message_id, fleet, cmd.device_id)
                n += 1
        return n

    def run(self) -> None:
        """Start the re-send loop."""
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                if self.lease.check()[0]:
                    self.republish()
            except Exception:  # a store or broker hiccup: try again on the next tick
                log.exception("re-sending recalibrate commands failed")


def _unfit(d: DeviceRecord) -> str | None:
    """Why a device cannot take a recalibrate now (None: it can)."""
    if d.state == "offline":
        return "is offline; ask again when it is back"
    if not d.release_name:
        return "runs no release yet: roll one out first"
    return None


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        raise RecalibrationError(400, f"{text!r} is not a recalibration id (a UUID)") from None
