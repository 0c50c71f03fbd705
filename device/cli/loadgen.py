"""`edgeloop-agent loadgen`: load-test the inference API with a folder of images (like hey / wrk)."""

from __future__ import annotations

import argparse
import json

from device.engine.loadgen import loadgen


def _cmd_loadgen(args: argparse.Namespace) -> int:
    r = loadgen(args.url, args.data, args.concurrency, args.duration, args.requests, args.timeout)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if r["errors"] == 0 else 1
    lat = r["latency_ms"]
    print(f"url          {r['url']}  (concurrency {r['concurrency']})")
    print(f"requests     {r['requests']:,} in {r['duration_s']:.2f} s, {r['errors']:,} errors {r['errors_by_status']}")
    print(f"throughput   {r['throughput_rps']:,.1f} requests/s")
    print(f"latency      p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f} ms")
    if r["top1"] is not None:
        print(f"top-1        {100 * r['top1']:.2f}% of {r['n_labelled']:,} labelled answers")
    print(f"answered by  {r['releases']}")
    return 0 if r["errors"] == 0 else 1


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("loadgen", help="load-test the inference API with an image folder (checks labels)")
    g.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8600")
    g.add_argument("--data", required=True, help="ImageFolder (one sub-folder per class) or a flat image folder")
    g.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive connections")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--duration", type=float, help="seconds to run (images repeat)")
    how.add_argument("--requests", type=int, help="requests to send (default: every image once)")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(handler=_cmd_loadgen)
