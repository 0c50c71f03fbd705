"""`edgeloop-agent selftest`: can this machine run the agent? Python, CPU and ISA, the L4T release, every
registered runtime (available, or why not), and with a model: build it and check it on the golden images.

The first thing to run on a new device (and what scripts/test-aarch64.sh runs on the emulated aarch64 CPU).
Exit code 0 when everything it was asked to check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from device.engine import selftest, sysinfo
from device.engine.jetson.release import l4t_release
from device.engine.runtimes import registry
from shared.modelmeta import read_meta


def _runtimes() -> dict[str, str | None]:
    """Every registered runtime: None where it can run here, else why not."""
    return {name: registry.runtime_class(name).probe() for name in registry.names()}


def _model_check(model: Path, runtime_name: str, threads: int, min_top1: float) -> dict[str, Any]:
    meta = read_meta(model)
    with registry.open_onnx(registry.runtime_config(runtime_name, threads), model, meta.precision) as rt:
        top1 = selftest.golden_top1(rt, meta.classes, meta.preprocessing)
        return {
            "model": str(model),
            "runtime": rt.name,
            "runtime_version": rt.version(),
            "accelerator": rt.accelerator(),
            "precision": meta.precision,
            "golden_top1": top1,
            "min_top1": min_top1,
            "model_passed": top1 >= min_top1,
        }


def selftest_command(model: Path | None, runtime_name: str, threads: int, min_top1: float) -> dict[str, Any]:
    runtimes = _runtimes()
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": sysinfo.machine(),
        "l4t_release": l4t_release(),
        "runtimes": runtimes,
    }
    ok = any(reason is None for reason in runtimes.values())
    if model is not None:
        result.update(_model_check(model, runtime_name, threads, min_top1))
        ok = ok and bool(result["model_passed"])
    result["passed"] = ok
    return result


def _cmd_selftest(args: argparse.Namespace) -> int:
    r = selftest_command(Path(args.model) if args.model else None, args.runtime, args.threads, args.min_top1)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if r["passed"] else 1
    m = r["machine"]
    print(f"python       {r['python']} on {m['arch']} ({m['cpu']}, {m['logical_cores']} cores, ISA {m['isa']})")
    print(f"jetson       {r['l4t_release'] or 'no (/etc/nv_tegra_release absent)'}")
    for name, reason in r["runtimes"].items():
        print(f"runtime      {name:<12} {'available' if reason is None else 'unavailable: ' + reason}")
    if "golden_top1" in r:
        verdict = "passed" if r["model_passed"] else f"FAILED (below {100 * r['min_top1']:.0f}%)"
        print(
            f"model        {r['model']} ({r['precision']}) on {r['runtime']} {r['runtime_version']}: golden top-1 "
            f"{100 * r['golden_top1']:.1f}% {verdict}"
        )
    print("selftest     " + ("passed" if r["passed"] else "FAILED"))
    return 0 if r["passed"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("selftest", help="check this machine: runtimes, ISA, Jetson release; a model on golden images")
    s.add_argument("model", nargs="?", help="an ONNX file to build and check on the golden images")
    s.add_argument("--runtime", choices=registry.config_types(), default=registry.AUTO)
    s.add_argument("--threads", type=int, default=0, help="ONNX Runtime / OpenVINO threads (0: one per core)")
    s.add_argument("--min-top1", type=float, default=0.5, help="lowest golden-set top-1 that passes (0-1)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=_cmd_selftest)
