"""`edgeloop fleet`: fleet views and field samples, through the REST API of `edgeloop serve`.

`fleet status` shows, per device, its latest benchmark, what it served (latency, input and label drift),
its latest re-calibration (``edgeloop recalibrate``) and the latest verdict of its INT8 gate at activation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.cli.common import api_client, server_arg
from host.fleet.client import fetch_samples
from shared.errors import EdgeloopError

if TYPE_CHECKING:
    from host.fleet.client import ApiClient


def drift_text(drift: dict[str, Any] | None) -> str:
    """The input drift column: "DRIFT 3.10" when flagged, "ok 0.20" when scored, "-" without a score
    (``score`` is the input drift; a device from before the split sent a mixed one)."""
    if not drift:
        return "-"
    return f"{'DRIFT' if drift['drifted'] else 'ok'} {drift['score']:.2f}"


def label_drift_text(drift: dict[str, Any] | None) -> str:
    """The label drift column: the predicted-class mix against the reference ("23.80"), which never flags;
    "-" without a score or from a device that does not report it apart."""
    label = (drift or {}).get("label_drift")
    return "-" if label is None else f"{label:.2f}"


def calibration_text(c: dict[str, Any] | None) -> str:
    """The calibration column: the latest outcome and its figures, e.g. "promoted 62.0->81.5" (top-1 or
    agreement %, old -> new), "failed", "-" when the device was never re-calibrated."""
    if not c:
        return "-"
    if c["before"] is None or c["after"] is None:
        return str(c["state"])
    return f"{c['state']} {100 * c['before']:.1f}->{100 * c['after']:.1f}"


GATE_TEXT = {"int8_verification_failed": "refused", "int8_requantized": "requantized", "int8_unverified": "unverified"}


def _cmd_fleet_status(args: argparse.Namespace) -> int:
    from host.table import print_table

    devices = api_client(args).get("/api/v1/fleet" + (f"?fleet={args.fleet}" if args.fleet else ""))
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    print_table(
        "fleet",
        ["fleet", "device", "state", "release", "p50 ms", "p99 ms", "top-1 %", "served p99 ms", "input drift",
         "label drift", "calibration", "INT8 gate", "runtime", "GPU/CPU"],
        [
            (
                d["fleet"],
                d["device_id"],
                d["state"],
                d["release"],
                d["p50_ms"],
                d["p99_ms"],
                100 * d["top1"] if d["top1"] is not None else None,
                d.get("served_p99_ms"),
                drift_text(d.get("drift")),
                label_drift_text(d.get("drift")),
                calibration_text(d.get("calibration")),
                GATE_TEXT.get((d.get("int8_gate") or {}).get("code", ""), "-"),
                d["runtime"],
                d["accelerator"] if d["gpu"] else "CPU",
            )
            for d in devices
        ],
    )  # fmt: skip
    for d in devices:
        for warning in d.get("warnings") or ():
            print(f"warning: {d['fleet']}/{d['device_id']}: {warning}")
    return 0


def fleet_of(api: ApiClient, device: str, fleet: str | None) -> str:
    """The fleet of ``device``: --fleet, or the one fleet the host knows it in."""
    if fleet:
        return fleet
    fleets = sorted({d["fleet"] for d in api.get("/api/v1/fleet") if d["device_id"] == device})
    if not fleets:
        raise EdgeloopError(f"the host knows no device {device!r}; see `edgeloop fleet status`")
    if len(fleets) > 1:
        raise EdgeloopError(f"device {device!r} is in fleets {', '.join(fleets)}; pass --fleet")
    return fleets[0]


def _cmd_fleet_sample(args: argparse.Namespace) -> int:
    if not 1 <= args.n <= 1000:
        raise EdgeloopError("--n must be 1 to 1000 images")
    api = api_client(args)
    result = fetch_samples(api, fleet_of(api, args.device, args.fleet), args.device, args.n, Path(args.out),
                           args.timeout)  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['received']} of {args.n} field images from {result['fleet']}/{args.device} in {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="fleet views and field samples")
    fsub = p.add_subparsers(dest="fleet_command", required=True)
    s = fsub.add_parser(
        "status", help="one line per device (served latency, input and label drift, calibration, INT8 gate)"
    )
    s.add_argument("--fleet")
    s.add_argument("--json", action="store_true")
    server_arg(s)
    s.set_defaults(handler=_cmd_fleet_status)
    f = fsub.add_parser("sample", help="fetch field images from a device (its reservoir of served images)")
    f.add_argument("device", help="device id")
    f.add_argument("--n", type=int, default=16, help="how many images (1-1000; the device may have fewer)")
    f.add_argument("--out", required=True, help="folder to save them in")
    f.add_argument("--fleet", help="the device's fleet (default: the one the host knows it in)")
    f.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the images")
    f.add_argument("--json", action="store_true")
    server_arg(f)
    f.set_defaults(handler=_cmd_fleet_sample)
