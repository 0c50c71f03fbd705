"""The ship rule: a compressed model goes only to the runtimes where it was measured faster than its
unpruned INT8 model.

A MAC cut is not a speed-up: on ONNX Runtime's x86 INT8 kernels a channel-pruned ResNet-20 can be
slower than the unpruned INT8 file while OpenVINO turns the same cut into 1.65x (docs/results.md). The
evidence is ``edgeloop report``'s JSON: one row per file and runtime, with ``speedup_vs_unpruned_int8``
measured side by side in one run (and the file's sha256, so the row is known to be about this file).
``decide`` turns the rows of a release's INT8 files into the manifest's ``runtimes``: the runtimes a
device may run the release on. A release of the unpruned model itself is not restricted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from shared.errors import EdgeloopError
from shared.protocol import Artifact
from shared.protocol.releases import RuntimeName, pick_artifact

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = get_args(RuntimeName)


@dataclass(frozen=True)
class Verdict:
    """One runtime's measurement of the release's INT8 file against the unpruned INT8 file."""

    runtime: str
    file: str  # the release's INT8 file a device on ``runtime`` runs
    speedup: float | None  # None: the unpruned INT8 file was not measured on this runtime
    ships: bool

    def describe(self) -> str:
        if self.speedup is None:
            return f"{self.runtime}: {self.file} not compared (the unpruned INT8 file was not measured there)"
        verb = "ships" if self.ships else "does not ship"
        return f"{self.runtime}: {self.file} {self.speedup:.2f}x the unpruned INT8, {verb}"


@dataclass(frozen=True)
class ShipDecision:
    runtimes: tuple[str, ...] | None  # None: any runtime (the unpruned model, nothing to compare with)
    verdicts: tuple[Verdict, ...]
    machine: str  # where the report was measured, e.g. "AMD EPYC (avx2)"

    def describe(self) -> str:
        if self.runtimes is None:
            return f"ship rule: the unpruned model; any runtime (report measured on {self.machine})"
        lines = "; ".join(v.describe() for v in self.verdicts)
        return f"ship rule (measured on {self.machine}): {lines}"


def load_report(path: str | Path) -> dict[str, Any]:
    """An ``edgeloop report`` JSON file, with a clear error for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeloopError(f"speed report {path} not found; make it with `edgeloop report BUILD_DIR --data TEST "
                            "--baseline UNPRUNED.onnx --json-out FILE`") from None  # fmt: skip
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeloopError(f"speed report {path} is not readable JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("variants"), list) or "baseline" not in data:
        raise EdgeloopError(f"{path} is not an `edgeloop report` JSON file (no variants or baseline)")
    return data


def _machine(report: dict[str, Any]) -> str:
    m = report.get("machine") or {}
    isa = ", ".join(m.get("isa") or []) or "no AVX2"
    return f"{m.get('cpu', 'unknown CPU')} ({isa})"


def _rows_for(report: dict[str, Any], artifact: Artifact, runtime: str) -> list[dict[str, Any]]:
    """The report's rows about this very file on ``runtime``: by sha256 where the report has it, else by name."""
    rows = [r for r in report["variants"] if isinstance(r, dict) and r.get("runtime") == runtime]
    by_digest = [r for r in rows if r.get("sha256") == artifact.sha256]
    if by_digest:
        return by_digest
    named = [r for r in rows if r.get("file") == artifact.name]
    if any(r.get("sha256") for r in named):  # the report measured another file of that name
        raise EdgeloopError(
            f"the speed report measured a different {artifact.name} (sha256 differs): measure this build again"
        )
    if named:
        log.warning("the speed report has no sha256 for %s: matched by file name only", artifact.name)
    return named


def _file_for(int8: Sequence[Artifact], runtime: str) -> Artifact | None:
    """The INT8 file a device runs on ``runtime`` (``pick_artifact``, as the device chooses). An ONNX Runtime
    device never runs the TensorRT-form file, so that file's speed on ONNX Runtime says nothing there."""
    from device.engine.runtimes import registry

    also = registry.runtime_class(runtime).also_runs if runtime in registry.names() else ()
    return pick_artifact(int8, runtime, "int8", also)


def decide(report: dict[str, Any], artifacts: Sequence[Artifact], min_speedup: float = 1.0) -> ShipDecision:
    """The runtimes the release of ``artifacts`` ships to, by the report's measurements of the INT8 file a
    device on each runtime would run.

    A runtime ships when that file's speed-up over the unpruned INT8 file is above 1 and at least
    ``min_speedup``. Raises when the report has nothing on the release's INT8 files, or when no runtime ships.
    """
    if min_speedup < 1.0:
        raise EdgeloopError(f"min_speedup is {min_speedup}: a variant slower than the unpruned INT8 never pays")
    machine = _machine(report)
    int8 = [a for a in artifacts if a.precision == "int8"]
    if not int8:
        raise EdgeloopError("the ship rule compares INT8 files, and this release has none")
    if any(isinstance(r, dict) and "runtime" not in r for r in report["variants"]):
        raise EdgeloopError("the speed report has no runtime per row (an older `edgeloop report`): run it again")
    base = str(report["baseline"]).removesuffix(".onnx")
    unpruned = {f"{base}-int8.onnx", f"{base}-int8-trt.onnx"}
    verdicts: list[Verdict] = []
    measured_unpruned = False
    for runtime in RUNTIMES:
        artifact = _file_for(int8, runtime)
        rows = _rows_for(report, artifact, runtime) if artifact is not None else []
        if artifact is None or not rows:
            continue
        if artifact.name in unpruned:
            measured_unpruned = True
            continue
        speedup = rows[0].get("speedup_vs_unpruned_int8")
        ships = isinstance(speedup, int | float) and speedup > 1.0 and speedup >= min_speedup
        verdicts.append(Verdict(runtime, artifact.name, float(speedup) if speedup is not None else None, ships))
    if not verdicts:
        if measured_unpruned:
            return ShipDecision(None, (), machine)  # the unpruned model: nothing to compare it with
        names = ", ".join(a.name for a in int8)
        raise EdgeloopError(f"the speed report has no row for {names}: run `edgeloop report` on this build first")
    runtimes = tuple(sorted({v.runtime for v in verdicts if v.ships}))
    decision = ShipDecision(runtimes, tuple(verdicts), machine)
    if not runtimes:
        bar = "faster than its unpruned INT8" + (f" by at least {min_speedup:.2f}x" if min_speedup > 1.0 else "")
        raise EdgeloopError(
            f"not shipped: the model is not {bar} on any runtime measured. {decision.describe()}. "
            "Pass --ship-slower to ship it anyway."
        )
    return decision
