"""The INT8 gate of an activation: an INT8 engine goes live only if it agrees with the release's FP32.

Checked on the device's own labelled images (its eval set, else the golden images) against the FP32
artifact every release carries, on the same runtime. When the INT8 engine fails, the device says so
(``int8_verification_failed``) and then, in order:

1. re-quantizes the FP32 model itself, in the Q/DQ form this runtime and ISA need
   (``device.engine.calibration``), when it has a calibration set (its field-sample reservoir or
   ``field_dir``), and uses that engine if it verifies;
2. otherwise runs the best other precision that verifies (FP16 where the runtime prefers it, else the
   FP32 reference itself).

Every engine tried is listed in the DeployReport's ``candidates``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from device.engine.calibration import calibset, forms
from device.engine.calibration.quantize import quantize
from device.engine.calibration.verify import Verification, compare
from device.engine.runtimes.base import Engine, Runtime
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.protocol import Artifact, EngineCandidate, ReleaseManifest

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """An artifact built and loaded in a runtime of its own."""

    runtime: Runtime
    artifact: Artifact
    engine: Engine
    cache_hit: bool
    onnx: Path  # the artifact's file on the device


# the engine manager fetches (or finds) an artifact, builds it in a new runtime and loads it
OpenArtifact = Callable[[Artifact], Loaded]
# it files a device-made ONNX in its artifact store, under the record's sha256
AdoptFile = Callable[[Path, Artifact], None]


@dataclass
class GateResult:
    chosen: Loaded
    candidates: list[EngineCandidate] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (level, code, message)


@dataclass(frozen=True)
class Int8Settings:
    max_drop_points: float = 1.0
    min_agreement: float = 0.97
    calibration_images: int = 1024


def device_artifact(path: Path, name: str) -> Artifact:
    """The record of an INT8 file made on the device (``url`` "device:<sha256>": never downloaded)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Artifact(
        name=name, url=f"device:{digest}", sha256=digest, size=path.stat().st_size, precision="int8", calibration="ptq"
    )


def candidate_of(
    loaded: Loaded, v: Verification | None, origin: Literal["release", "device"] = "release", note: str = ""
) -> EngineCandidate:
    return EngineCandidate(
        runtime=loaded.runtime.target(),  # "tensorrt:dla0" on a DLA core
        precision=loaded.artifact.precision,
        artifact=loaded.artifact.name[:160],
        origin=origin,
        verified=None if v is None else v.passed,
        agreement=None if v is None else v.agreement,
        drop_points=None if v is None or v.drop_points is None else max(-100.0, min(100.0, v.drop_points)),
        note=(note or (v.reason if v else ""))[:512],
    )


class Int8Gate:
    def __init__(
        self,
        manifest: ReleaseManifest,
        images: npt.NDArray[np.uint8],
        labels: npt.NDArray[np.int64] | None,
        prep: Preprocessing,
        open_artifact: OpenArtifact,
        adopt_file: AdoptFile,
        calibration_files: Callable[[], list[Path]],
        settings: Int8Settings,
    ) -> None:
        self.manifest, self.images, self.labels, self.prep = manifest, images, labels, prep
        self.open_artifact, self.adopt_file, self.calibration_files = open_artifact, adopt_file, calibration_files
        self.settings = settings

    def _verify(self, candidate: Runtime, reference: Runtime) -> Verification:
        s = self.settings
        return compare(candidate, reference, self.images, self.prep, self.labels, s.max_drop_points, s.min_agreement)

    def run(self, int8: Loaded, precisions: tuple[str, ...]) -> GateResult:
        """Verify ``int8``; returns what to run (``int8`` itself, a re-quantized engine, or a fallback)."""
        try:
            fp32_artifact = self.manifest.artifact_for(int8.runtime.name, "fp32", int8.runtime.also_runs)
        except EdgeloopError:
            note = f"release {self.manifest.ref} carries no FP32 model to verify against: INT8 runs unverified"
            return GateResult(int8, [candidate_of(int8, None, note=note)], [("warning", "int8_unverified", note)])
        reference = self.open_artifact(fp32_artifact)
        try:
            result = self._decide(int8, reference, precisions)
        except BaseException:
            reference.runtime.close()
            raise
        name = result.chosen.artifact.name
        result.candidates = [c.model_copy(update={"chosen": c.artifact == name}) for c in result.candidates]
        return result

    def calibrate(self, reference: Loaded) -> GateResult:
        """An INT8 engine made on the device from the FP32 ``reference`` (for a runtime the release carries no
        INT8 file for). ``chosen`` is the new engine when it verifies (``reference`` is then closed), else
        ``reference`` itself."""
        result = GateResult(reference)
        local = self._requantize(reference, result)
        if local is not None:
            reference.runtime.close()
            result.chosen = local
        return result

    def _decide(self, int8: Loaded, reference: Loaded, precisions: tuple[str, ...]) -> GateResult:
        v = self._verify(int8.runtime, reference.runtime)
        result = GateResult(int8, [candidate_of(int8, v)])
        if v.passed:
            reference.runtime.close()
            return result
        result.events.append(
            (
                "error",
                "int8_verification_failed",
                f"INT8 engine {int8.artifact.name} refused on {int8.runtime.name}: {v.reason}",
            )
        )
        int8.runtime.close()
        local = self._requantize(reference, result)
        if local is not None:
            reference.runtime.close()
            result.chosen = local
            return result
        result.chosen = self._fallback(reference, precisions, result)
        return result

    def _requantize(self, reference: Loaded, result: GateResult) -> Loaded | None:
        """Quantize the FP32 model here, in this runtime's form, from the device's field images."""
        files = self.calibration_files()
        if len(files) < calibset.MIN_IMAGES:
            log.info("no local re-quantization: %d field images (%d needed)", len(files), calibset.MIN_IMAGES)
            return None
        try:
            cal = calibset.load(files, self.prep.size)
        except calibset.CalibrationSetError as e:
            result.events.append(("warning", e.code, f"no local re-quantization: {e}"))
            return None
        choice = forms.choose(reference.runtime.name, reference.runtime.uses_gpu())
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "local-int8.onnx"
            images = cal.split(self.settings.calibration_images)[0].images
            quantize(reference.onnx, out, images, choice.form, reference.runtime.name, calibration="device")
            record = device_artifact(out, f"device-int8-{choice.form.name}.onnx")
            self.adopt_file(out, record)
        loaded = self.open_artifact(record)
        v = self._verify(loaded.runtime, reference.runtime)
        result.candidates.append(candidate_of(loaded, v, "device", f"{choice.form.name}: {choice.reason}"))
        if v.passed:
            note = f"re-quantized on the device ({choice.form.name}): {v.reason}"
            result.events.append(("info", "int8_requantized", note))
            return loaded
        loaded.runtime.close()
        return None

    def _fallback(self, reference: Loaded, precisions: tuple[str, ...], result: GateResult) -> Loaded:
        for p in precisions:
            if p == "int8":
                continue
            if p == "fp32":
                result.candidates.append(candidate_of(reference, None, note="the FP32 reference itself"))
                return reference
            try:
                artifact = self.manifest.artifact_for(reference.runtime.name, p, reference.runtime.also_runs)  # type: ignore[arg-type]
            except EdgeloopError:
                continue
            loaded = self.open_artifact(artifact)
            v = self._verify(loaded.runtime, reference.runtime)
            result.candidates.append(candidate_of(loaded, v))
            if v.passed:
                reference.runtime.close()
                return loaded
            loaded.runtime.close()
        result.candidates.append(candidate_of(reference, None, note="the FP32 reference itself"))
        return reference
