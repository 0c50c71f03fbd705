"""``recalibrate``: re-quantize the running release's FP32 model on field images, beside the running
engine, verify old against new, and promote the new engine only if it is not worse.

* Images: the field-sample reservoir, a folder on the device, or a set the host serves.
  They are checked (``calibset``) before anything is built; a bad set leaves the running engine.
* Form: the Q/DQ form of this device's runtime and ISA (``forms.choose``).
* Verification, old engine against new: with a labelled set (the command's ``eval_dir``, else the
  agent's) their top-1; without labels their top-1 agreement with the FP32 model on held-out field
  images, since INT8's job is to match FP32.
* ``promote``: auto swaps the new engine in when it is not worse; manual keeps it on disk for a later
  ``recalibrate`` with ``action = "promote"``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

from device.activation.int8 import Loaded, device_artifact
from device.activation.records import ActivationError, prep_of
from device.activation.steps import selftest_top1
from device.commands.base import AgentContext, CommandHandler, register
from device.commands.calibration_sources import download_set
from device.commands.sample import field_images
from device.engine.calibration import calibset, forms
from device.engine.calibration.quantize import activation_ranges, moved_ranges, quantize
from device.engine.calibration.verify import compare, predictions
from device.engine.runtimes.base import Runtime
from shared import datasets
from shared.errors import EdgeloopError
from shared.protocol import Artifact, CalibrationReport, RangeShift, RecalibrateCommand, ReleaseManifest

log = logging.getLogger(__name__)

MIN_HELD_OUT = 20


def _files(agent: AgentContext, cmd: RecalibrateCommand, work: Path) -> tuple[str, list[Path]]:
    if cmd.source == "local":
        return str(cmd.calib_dir), calibset.image_files(Path(str(cmd.calib_dir)))
    if cmd.source == "url":
        limit = agent.config.max_artifact_mb << 20
        return str(cmd.calib_url), download_set(str(cmd.calib_url), work, limit, agent.config.http_timeout_s)
    where, files = field_images(agent)
    if where != "reservoir" and agent.config.field_dir is None:
        raise calibset.CalibrationSetError(
            "calibration_set_missing", "this device keeps no field images: configure [inference.reservoir] or field_dir"
        )
    return where, files


def _evaluate(
    agent: AgentContext,
    cmd: RecalibrateCommand,
    manifest: ReleaseManifest,
    old: Runtime,
    new: Runtime,
    fp32: Runtime,
    held: calibset.CalibrationSet,
) -> dict[str, Any]:
    """Old against new: top-1 on a labelled set, else agreement with FP32 on the held-out field images."""
    prep = prep_of(manifest)
    eval_dir = Path(cmd.eval_dir) if cmd.eval_dir else agent.config.eval_dir
    if eval_dir is not None:
        data = datasets.load_labelled(eval_dir, manifest.model.classes, size=prep.size)
        before = float((predictions(old, data.images, prep) == data.labels).mean())
        after = float((predictions(new, data.images, prep) == data.labels).mean())
        return {
            "evaluation": "labelled",
            "n_eval": len(data),
            "top1_before": before,
            "top1_after": after,
            "better": after >= before,
        }
    if len(held) < MIN_HELD_OUT:
        raise calibset.CalibrationSetError(
            "calibration_set_too_small",
            f"no labelled eval set and only {len(held)} held-out field images (>= {MIN_HELD_OUT} needed): "
            f"send fewer n_images than the {len(held) + cmd.n_images} images there are",
        )
    before = compare(old, fp32, held.images, prep).agreement
    after = compare(new, fp32, held.images, prep).agreement
    return {
        "evaluation": "agreement",
        "n_eval": len(held),
        "agreement_before": before,
        "agreement_after": after,
        "better": after >= before,
    }


def _ranges_of(path: Path | None) -> dict[str, tuple[float, float]]:
    return activation_ranges(onnx.load(str(path))) if path is not None and path.is_file() else {}


def _pending_path(agent: AgentContext, command_id: object) -> Path:
    return agent.state.dir / "calibrations" / f"{command_id}.json"


def _calibrate(agent: AgentContext, cmd: RecalibrateCommand, work: Path) -> dict[str, Any]:
    with agent.engines.active() as (old, manifest, slot):
        rt_name, gpu, precision_before, also = old.name, old.uses_gpu(), slot.precision, old.also_runs
        old_file = agent.state.artifact_path(slot.artifact_sha256)
    opener = agent.engines.opener(manifest, cmd.base_url)
    fp32_artifact = manifest.artifact_for(rt_name, "fp32", also)
    fp32_path = opener.fetch(fp32_artifact)
    where, files = _files(agent, cmd, work)
    cal = calibset.load(files, manifest.model.preprocessing.size)
    calib, held = cal.split(cmd.n_images)
    choice = forms.choose(rt_name, gpu)
    t0 = time.perf_counter()
    out = work / "recalibrated.onnx"
    quantize(fp32_path, out, calib.images, choice.form, rt_name, cmd.method, calibration="device")
    calibration_s = time.perf_counter() - t0
    record = device_artifact(out, f"device-int8-{choice.form.name}-{str(cmd.message_id)[:8]}.onnx")
    opener.adopt(out, record)
    t1 = time.perf_counter()
    new = opener.open(record)
    build_s = time.perf_counter() - t1
    facts: dict[str, Any] = {
        "source": where[:256],
        "n_images": len(calib),
        "precision_before": precision_before,
        "form": choice.form.name,
        "form_reason": choice.reason[:512],
        "artifact": record.name,
        "calibration_s": round(calibration_s, 3),
        "build_s": round(build_s, 3),
        "moved_ranges": tuple(RangeShift(**r) for r in moved_ranges(_ranges_of(old_file), _ranges_of(out))),
    }
    return _verify_and_promote(agent, cmd, manifest, new, opener.open(fp32_artifact), held, facts)


def _verify_and_promote(
    agent: AgentContext,
    cmd: RecalibrateCommand,
    manifest: ReleaseManifest,
    new: Loaded,
    fp32: Loaded,
    held: calibset.CalibrationSet,
    facts: dict[str, Any],
) -> dict[str, Any]:
    promoted = False
    try:
        selftest_top1(new.runtime, manifest, new.artifact, agent.config)
        with agent.engines.active() as (old, _, _):
            facts.update(_evaluate(agent, cmd, manifest, old, new.runtime, fp32.runtime, held))
        if cmd.promote and facts["better"]:
            agent.engines.adopt(new, manifest)
            promoted = True
        elif not cmd.promote:
            path = _pending_path(agent, cmd.message_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new.artifact.model_dump_json())
    finally:
        fp32.runtime.close()
        if not promoted:
            new.runtime.close()
    return {**facts, "promoted": promoted}


def _promote(agent: AgentContext, cmd: RecalibrateCommand) -> dict[str, Any]:
    path = _pending_path(agent, cmd.calibration_id)
    if not path.is_file():
        raise EdgeloopError(f"no kept calibration {cmd.calibration_id} on this device")
    artifact = Artifact.model_validate_json(path.read_text())
    manifest, _ = agent.engines.running()
    loaded = agent.engines.opener(manifest, cmd.base_url).open(artifact)
    try:
        selftest_top1(loaded.runtime, manifest, artifact, agent.config)
    except BaseException:
        loaded.runtime.close()
        raise
    agent.engines.adopt(loaded, manifest)
    path.unlink()
    return {"source": f"calibration {cmd.calibration_id}", "n_images": 0, "artifact": artifact.name, "promoted": True}


@register
class RecalibrateHandler(CommandHandler):
    kind = "recalibrate"

    def handle(self, agent: AgentContext, cmd: RecalibrateCommand) -> None:
        release = agent.engines.running()[0].ref
        base = {
            "device_id": agent.device_id,
            "command_id": cmd.message_id,
            "rollout_id": cmd.rollout_id,
            "release": release,
            "method": cmd.method,
            "action": cmd.action,
        }
        try:
            with tempfile.TemporaryDirectory(prefix="edgeloop-recalibrate-") as tmp:
                facts = _promote(agent, cmd) if cmd.action == "promote" else _calibrate(agent, cmd, Path(tmp))
        except (calibset.CalibrationSetError, ActivationError) as e:
            agent.event(
                "error", e.code, f"recalibration refused, the running engine stays: {e}", command_id=cmd.message_id
            )
            agent.report(CalibrationReport(**base, n_images=0, error=str(e)[:4000]))
            return
        except EdgeloopError as e:  # any other refusal: the host still hears how this calibration ended
            agent.report(CalibrationReport(**base, n_images=0, error=str(e)[:4000]))
            raise
        agent.report(CalibrationReport(**base, **facts))
        log.info(
            "recalibration %s: %s",
            cmd.message_id,
            json.dumps({k: v for k, v in facts.items() if k != "moved_ranges"}, default=str),
        )
        agent.publish_status()
