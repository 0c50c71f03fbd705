"""`edgeloop recalibrate`: field re-calibration of INT8 engines, through the REST API of `edgeloop serve`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.cli.common import server_arg
from host.cli.fleet import fleet_of
from shared.errors import EdgeloopError

if TYPE_CHECKING:
    from host.fleet.client import ApiClient

USAGE = """edgeloop recalibrate DEVICE | --fleet F [--eval-dir DIR] [--method M] [--promote auto|manual] [--images N]
                           [--source reservoir|local|url] [--calib-dir DIR] [--calib-data DIR] [--wait] [--json]
       edgeloop recalibrate promote DEVICE [--calibration ID] [--fleet F] [--wait] [--json]"""

DESCRIPTION = """\
Re-quantize the INT8 engine a device runs from its release's FP32 model, on field images, and verify
the new engine against the running one on the device itself. With a labelled folder on the device
(--eval-dir, else the agent's eval_dir) old and new are compared by top-1; without labels, by their
agreement with FP32 on held-out field images. --promote auto swaps the new engine in only if it is not
worse; --promote manual keeps it on the device for `edgeloop recalibrate promote DEVICE`.

Calibration images: the device's reservoir of served images (default), a folder on the device
(--calib-dir), or a folder on the host that `edgeloop serve` packs and serves (--calib-data)."""

DONE = frozenset({"failed", "rejected", "kept", "promoted"})  # host.fleet.store.calibration_records
CALIBRATE_ONLY = ("eval_dir", "method", "images", "source", "calib_dir", "calib_data", "promote")


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def _note(r: dict[str, Any]) -> str:
    if r["error"]:
        return str(r["error"])[:120]
    if r["state"] == "kept":
        return f"promote: edgeloop recalibrate promote {r['device_id']} --calibration {r['id']}"
    if r["state"] == "rejected":
        return "not better: the running engine stays"
    if r["promoted_by"]:
        return f"promoted by {r['promoted_by']}"
    return f"swaps in {r['calibration_id']}" if r["action"] == "promote" else ""


def _table(records: list[dict[str, Any]]) -> None:
    from host.table import print_table

    rows = []
    for r in records:
        o = r["outcome"] or {}
        rows.append((r["fleet"], r["device_id"], r["action"], r["state"], o.get("evaluation"), _pct(o.get("before")),
                     _pct(o.get("after")), o.get("n_images"), o.get("n_eval"), o.get("form"), o.get("calibration_s"),
                     o.get("build_s"), _note(r)))  # fmt: skip
    print_table(
        "recalibrations",
        ["fleet", "device", "action", "state", "evaluation", "before %", "after %", "calib images", "eval images",
         "form", "calib s", "build s", "note"],
        rows,
    )  # fmt: skip


def _wait(api: ApiClient, records: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Poll each recalibration until the device has answered it (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r if r["state"] in DONE else api.get(f"/api/v1/recalibrations/{r['id']}") for r in records]
        if all(r["state"] in DONE for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(1.0)


def _calibrate(api: ApiClient, args: argparse.Namespace) -> dict[str, Any]:
    if len(args.target) > 1:
        raise EdgeloopError(f"one DEVICE (or --fleet F for all of a fleet), not {' '.join(args.target)}")
    if args.calibration:
        raise EdgeloopError("--calibration goes with `edgeloop recalibrate promote DEVICE`")
    if args.images is not None and not 32 <= args.images <= 100000:
        raise EdgeloopError("--images must be 32 to 100000 (the rest of the field images verify)")
    body = {
        "device": args.target[0] if args.target else None,
        "fleet": args.fleet,
        "n_images": args.images or 1024,
        "method": args.method or "percentile",
        "source": args.source,
        "calib_dir": args.calib_dir,
        # a folder on the host that runs `edgeloop serve` (it packs and serves it): sent as an absolute path
        "calib_data": str(Path(args.calib_data).expanduser().resolve()) if args.calib_data else None,
        "eval_dir": args.eval_dir,
        "promote": args.promote or "auto",
    }
    if body["device"] is None and body["fleet"] is None:
        raise EdgeloopError("name a DEVICE, or --fleet F to re-calibrate every online device of a fleet")
    answer: dict[str, Any] = api.post("/api/v1/recalibrations", body)
    return answer


def _promote(api: ApiClient, args: argparse.Namespace) -> dict[str, Any]:
    if len(args.target) != 2:
        raise EdgeloopError("usage: edgeloop recalibrate promote DEVICE [--calibration ID]")
    given = [f"--{k.replace('_', '-')}" for k in CALIBRATE_ONLY if getattr(args, k) is not None]
    if given:
        raise EdgeloopError(f"{', '.join(given)} go with a calibration, not with `recalibrate promote`")
    device = args.target[1]
    fleet = fleet_of(api, device, args.fleet)
    r = api.post(f"/api/v1/devices/{fleet}/{device}/promote", {"calibration_id": args.calibration})
    return {"command_ids": [r["id"]], "recalibrations": [r], "skipped": []}


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    from host.fleet.client import ApiClient

    api = ApiClient(args.server)
    promote = args.target[:1] == ["promote"]
    answer = _promote(api, args) if promote else _calibrate(api, args)
    records: list[dict[str, Any]] = answer["recalibrations"]
    if args.wait:
        records = _wait(api, records, args.timeout)
        answer = {**answer, "recalibrations": records}
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        for s in answer["skipped"]:
            print(f"skipped {s['device_id']}: {s['reason']}")
        if args.wait:
            _table(records)
        else:
            for r in records:
                print(f"sent {r['action']} {r['id']} to {r['fleet']}/{r['device_id']} ({r['state']})")
    if not args.wait:
        return 0
    late = [r["device_id"] for r in records if r["state"] not in DONE]
    if late and not args.json:
        print(f"no answer within {args.timeout:.0f} s from {', '.join(late)} (--timeout)")
    return 1 if late or any(r["state"] == "failed" for r in records) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recalibrate",
        help="re-calibrate the INT8 engine of a device (or a fleet) on field images; promote a kept one",
        usage=USAGE,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="*", metavar="DEVICE", help="a device id, or `promote DEVICE`")
    p.add_argument("--fleet", help="every online device of this fleet (with DEVICE: the device's fleet)")
    p.add_argument("--eval-dir", help="a labelled folder (one sub-folder per class) ON THE DEVICE: compare by top-1")
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], help="calibration method (percentile)")
    p.add_argument("--promote", choices=["auto", "manual"], help="auto (default): swap in if not worse; manual: keep")
    p.add_argument("--images", type=int, help="field images to calibrate on; the rest verify (default 1024)")
    p.add_argument("--source", choices=["reservoir", "local", "url"], help="default: from --calib-dir/--calib-data")
    p.add_argument("--calib-dir", help="source local: a folder of images on the device")
    p.add_argument("--calib-data", help="source url: a folder of images on the host of `edgeloop serve`, served")
    p.add_argument("--calibration", help="promote: the recalibration id (default: the latest kept one)")
    p.add_argument("--wait", action="store_true", help="wait for the devices' answers and print them")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    p.add_argument("--json", action="store_true")
    server_arg(p)
    p.set_defaults(handler=_cmd_recalibrate)
