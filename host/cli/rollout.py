"""`edgeloop rollout`: staged rollouts, through the REST API of `edgeloop serve`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from host.cli.common import api_client, fraction, server_arg

if TYPE_CHECKING:
    from host.fleet.client import ApiClient


def _rollout_table(r: dict[str, Any]) -> None:
    from host.table import print_table

    devices = r.get("devices") or []
    print(
        f"rollout {r['id']}: {r['release_name']}@{r['release_version']} -> {r['fleet']}: {r['state']}"
        + (f" ({r['reason']})" if r.get("reason") else "")
    )
    waves = {w["wave"]: w for w in r.get("waves") or []}
    print_table(
        "devices",
        ["wave", "device", "wave state", "device state", "top-1 %", "p99 ms", "note"],
        [
            (
                d["wave"] + 1,
                d["device_id"],
                waves.get(d["wave"], {}).get("state"),
                d["state"],
                100 * d["top1"] if d["top1"] is not None else None,
                d["p99_ms"],
                (d["error"] or "") + ("" if d["was_online"] else " [was offline]"),
            )
            for d in devices
        ],
    )


def _start(api: ApiClient, args: argparse.Namespace) -> int:
    import time

    from host.fleet.rollout_config import RolloutConfig, parse_duration
    from host.fleet.store.records import TERMINAL

    cfg = RolloutConfig(
        waves=[w.strip() for w in args.waves.split(",")],
        max_accuracy_drop=args.max_accuracy_drop,
        p99_budget_ms=args.p99_budget_ms,
        abort_failures=fraction(args.abort_failures),
        wave_timeout_s=parse_duration(args.wave_timeout),
        precision=args.precision,
        devices=[d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None,
    )
    r = api.post(
        "/api/v1/rollouts", {"release": args.release, "fleet": args.fleet, "config": cfg.model_dump(mode="json")}
    )
    if not args.json:
        print(f"started rollout {r['id']}")
    if args.wait:
        while r["state"] not in TERMINAL:
            time.sleep(1)
            r = api.get(f"/api/v1/rollouts/{r['id']}")
    if args.json:  # the rollout as the REST API answers it: as started, or as it ended with --wait
        print(json.dumps(r, indent=2))
    elif args.wait:
        _rollout_table(r)
    return 0 if not args.wait or r["state"] == "completed" else 1


def _cmd_rollout(args: argparse.Namespace) -> int:
    api = api_client(args)
    if args.rollout_command == "start":
        return _start(api, args)
    if args.rollout_command == "status":
        rs = [api.get(f"/api/v1/rollouts/{args.rollout_id}")] if args.rollout_id else api.get("/api/v1/rollouts")
        if args.json:
            print(json.dumps(rs, indent=2))
        else:
            for r in rs:
                _rollout_table(r)
        return 0
    r = api.post(f"/api/v1/rollouts/{args.rollout_id}/{args.rollout_command}", {"reason": args.reason})
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"rollout {r['id']}: {r['state']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="staged rollouts (talks to `edgeloop serve`)")
    rsub = p.add_subparsers(dest="rollout_command", required=True)
    s = rsub.add_parser("start", help="roll a release out in gated waves")
    s.add_argument("release", help="name@version (or name: the latest version)")
    s.add_argument("--fleet", required=True)
    s.add_argument("--waves", default="1,25%,100%", help="cumulative wave targets (counts or percentages)")
    s.add_argument("--max-accuracy-drop", type=float, default=0.5, help="top-1 points below the source model")
    s.add_argument("--p99-budget-ms", type=float, help="p99 latency budget (batch 1)")
    s.add_argument("--abort-failures", default="10%", help="failure fraction of a wave that aborts")
    s.add_argument("--wave-timeout", default="10m", help="e.g. 600, 90s, 10m")
    s.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="force a precision on every device")
    s.add_argument("--devices", help="only these devices of the fleet, comma-separated (waves count within them)")
    s.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    s.add_argument("--json", action="store_true", help="print the rollout as one JSON object")
    server_arg(s)
    st = rsub.add_parser("status", help="show rollouts")
    st.add_argument("rollout_id", nargs="?")
    st.add_argument("--json", action="store_true")
    server_arg(st)
    for name, text in (
        ("abort", "stop a rollout and roll touched devices back"),
        ("rollback", "roll back every device a rollout touched"),
    ):
        a = rsub.add_parser(name, help=text)
        a.add_argument("rollout_id")
        a.add_argument("--reason", default=f"{name} requested from the CLI")
        a.add_argument("--json", action="store_true", help="print the rollout as one JSON object")
        server_arg(a)
    p.set_defaults(handler=_cmd_rollout)
