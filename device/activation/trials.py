"""The candidates of an activation and how one is tried.

``plan`` lists, for every runtime the device may use (highest priority first), every precision it runs
natively (best first) that the release carries a file for (``ReleaseManifest.artifact_for``, which also
looks at the files of runtimes it ``also_runs``), and, where the release has no INT8 file for a runtime
that runs INT8, an INT8 engine made here from the FP32 model when the device has field images to
calibrate on. A release that names its ``runtimes`` (a compressed model shipped only where it was measured
faster than its unpruned INT8) is planned on those runtimes alone. A runtime with DLA cores
(``Runtime.dla_cores``: TensorRT on a Jetson AGX Orin, Orin NX,
AGX Xavier or Xavier NX) adds each core as a candidate of its own (``tensorrt:dla0``, ``tensorrt:dla1``) at the
precisions DLA runs (INT8, FP16) that the release carries; they are measured like the others.
``TrialRunner`` tries one: fetch and build (``steps.ArtifactOpener``), the golden-set self-test, and
for INT8 the gate against FP32 (``int8.Int8Gate``), which may re-quantize or fall back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from device.activation import steps
from device.activation.int8 import GateResult, Int8Gate, Loaded, candidate_of
from device.activation.records import ActivationError
from device.activation.select import Option, Trial
from device.config import AgentConfig
from device.engine.runtimes.base import Runtime, dla_target
from shared.errors import EdgeloopError
from shared.protocol import Artifact, Precision, ReleaseManifest

log = logging.getLogger(__name__)

DLA_PRECISIONS: tuple[Precision, ...] = ("int8", "fp16")  # DLA runs nothing else


def _artifact(manifest: ReleaseManifest, runtime: Runtime, precision: Precision) -> Artifact | None:
    try:
        return manifest.artifact_for(runtime.name, precision, runtime.also_runs)
    except EdgeloopError:
        return None


def plan(
    manifest: ReleaseManifest, runtimes: Sequence[Runtime], asked: Precision | None, can_calibrate: bool
) -> list[Option]:
    """What to try, best guess first; raises ``no_suitable_artifact`` when nothing fits."""
    options: list[Option] = []
    tried: list[str] = []
    allowed = [rt for rt in runtimes if manifest.ships_to(rt.name)]
    if not allowed and manifest.runtimes is not None:
        have = ", ".join(rt.name for rt in runtimes) or "none"
        raise ActivationError(
            "no_suitable_artifact",
            f"release {manifest.ref} is made for {', '.join(manifest.runtimes or ())} (measured faster there than "
            f"its unpruned INT8 model); this device runs {have}",
        )
    for rt in allowed:
        wanted = steps.precisions_to_try(rt, asked)
        tried.append(f"{rt.name} at {'/'.join(wanted) or 'nothing'}")
        for p in wanted:
            artifact = _artifact(manifest, rt, p)
            if artifact is not None:
                options.append(Option(rt.target(), artifact))
                continue
            fp32 = _artifact(manifest, rt, "fp32")
            if p == "int8" and can_calibrate and fp32 is not None:
                options.append(Option(rt.target(), fp32, calibrate=True))
        options += dla_options(manifest, rt, asked)
    if not options:
        raise ActivationError(
            "no_suitable_artifact", f"release {manifest.ref} has no artifact to run: tried {'; '.join(tried)}"
        )
    return options


def dla_options(manifest: ReleaseManifest, runtime: Runtime, asked: Precision | None) -> list[Option]:
    """Each DLA core of ``runtime`` (none unless ``dla_cores() > 0``) at every precision DLA runs that the
    release carries a file for, INT8 first; none for a runtime already on one accelerator."""
    if runtime.target() != runtime.name:  # the config put it on a DLA core: that is its only candidate
        return []
    cores = runtime.dla_cores()
    wanted = [p for p in DLA_PRECISIONS if asked in (None, p)]
    artifacts = [a for p in wanted if (a := _artifact(manifest, runtime, p)) is not None] if cores > 0 else []
    return [Option(dla_target(runtime.name, core), a) for core in range(cores) for a in artifacts]


class TrialRunner:
    """Tries one ``Option`` (the ``select.TryOption`` of an activation)."""

    def __init__(
        self,
        manifest: ReleaseManifest,
        config: AgentConfig,
        opener_for: Callable[[str], steps.ArtifactOpener],
        gate_for: Callable[[steps.ArtifactOpener], Int8Gate],
    ) -> None:
        self.manifest, self.config, self.opener_for, self.gate_for = manifest, config, opener_for, gate_for

    def __call__(self, option: Option) -> Trial:
        opener = self.opener_for(option.runtime)
        loaded = opener.open(option.artifact)
        try:
            top1 = steps.selftest_top1(loaded.runtime, self.manifest, loaded.artifact, self.config)
        except BaseException:
            loaded.runtime.close()
            raise
        if option.calibrate:
            return self._gated(self.gate_for(opener).calibrate(loaded), top1, loaded)
        if loaded.artifact.precision == "int8" and self.config.int8.verify:
            result = self.gate_for(opener).run(loaded, loaded.runtime.supported_precisions())
            return self._gated(result, top1, loaded)
        note = "the FP32 reference" if loaded.artifact.precision == "fp32" else ""
        return Trial(loaded, top1, candidate_of(loaded, None, note=note))

    def _gated(self, result: GateResult, top1: float, tested: Loaded) -> Trial:
        chosen = result.chosen
        if chosen.artifact is not tested.artifact:  # a re-quantized engine or a fallback: self-test it too
            try:
                top1 = steps.selftest_top1(chosen.runtime, self.manifest, chosen.artifact, self.config)
            except BaseException:
                chosen.runtime.close()
                raise
        mine = [c for c in result.candidates if c.artifact == chosen.artifact.name[:160]]
        own = mine[-1] if mine else candidate_of(chosen, None)
        tried = [c.model_copy(update={"chosen": False}) for c in result.candidates if c is not own]
        trusted = chosen.artifact.precision != "int8" or own.verified is True
        return Trial(chosen, top1, own, tried, result.events, trusted)
