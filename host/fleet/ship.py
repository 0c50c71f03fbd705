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
from shared.protocol.releases import RuntimeName

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = get_args(RuntimeName)


@dataclass(frozen=True)
class Verdict:
    """One runtime's measurement of the release's INT8 file against the unpruned INT8 file."""

    runtime: str
    file: str
    speedup: float | None  # None: the unpruned INT8 file was not measured on this runtime
    ships: bool

    def describe(self) -> str:
        if self.speedup is None:
            return f"{self.runtime}: not compared (the unpruned INT8 file was not measured there)"
        verb = "ships" if self.ships else "does not ship"
        return f"{self.runtime}: {self.speedup:.2f}x the unpruned INT8 ({self.file}), {verb}"


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


def _rows_for(report: dict[str, Any], artifact: Artifact) -> list[dict[str, Any]]:
    """The report's rows about this very file: by sha256 where the report has it, else by name."""
    rows = [r for r in report["variants"] if isinstance(r, dict)]
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


def decide(report: dict[str, Any], artifacts: Sequence[Artifact], min_speedup: float = 1.0) -> ShipDecision:
    """The runtimes the release of ``artifacts`` ships to, by the report's measurements of its INT8 files.

    A runtime ships when its speed-up over the unpruned INT8 file is above 1 and at least ``min_speedup``.
    Raises when the report has nothing on the release's INT8 files, or when no runtime ships.
    """
    if min_speedup < 1.0:
        raise EdgeloopError(f"min_speedup is {min_speedup}: a variant slower than the unpruned INT8 never pays")
    machine = _machine(report)
    int8 = [a for a in artifacts if a.precision == "int8"]
    if not int8:
        raise EdgeloopError("the ship rule compares INT8 files, and this release has none")
    rows = [r for a in int8 for r in _rows_for(report, a)]
    if not rows:
        names = ", ".join(a.name for a in int8)
        raise EdgeloopError(f"the speed report has no row for {names}: run `edgeloop report` on this build first")
    unpruned = str(report["baseline"]).removesuffix(".onnx") + "-int8.onnx"
    if all(r.get("file") == unpruned for r in rows):
        return ShipDecision(None, (), machine)
    verdicts: list[Verdict] = []
    for r in rows:
        runtime = str(r.get("runtime", ""))
        if runtime not in RUNTIMES:
            log.warning("speed report row for %s on unknown runtime %r ignored", r.get("file"), runtime)
            continue
        speedup = r.get("speedup_vs_unpruned_int8")
        ships = isinstance(speedup, int | float) and speedup > 1.0 and speedup >= min_speedup
        verdicts.append(Verdict(runtime, unpruned, float(speedup) if speedup is not None else None, ships))
    runtimes = tuple(sorted({v.runtime for v in verdicts if v.ships}))
    decision = ShipDecision(runtimes or (), tuple(verdicts), machine)
    if not runtimes:
        raise EdgeloopError(
            f"not shipped: the model is not faster than its unpruned INT8 by at least {min_speedup:.2f}x on any "
            f"runtime measured. {decision.describe()}. Pass --ship-slower to ship it anyway."
        )
    return decision
