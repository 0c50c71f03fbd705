"""Serving benchmark: the agent's inference API against the raw runtime, side by side in one run.

    python benchmarks/serving.py --data TEST [--model host/zoo/resnet20.onnx] [--threads 1] [--rounds 3]

TEST is the 10,000-image CIFAR-10 test split (an ImageFolder). Each round runs, one after another:

1. ``edgeloop-agent bench MODEL --threads T`` -> raw throughput (pre-decoded tensors, batch 256);
2. ``edgeloop-agent serve MODEL --threads T`` + ``edgeloop-agent loadgen --data TEST --concurrency C``
   (every image once) with telemetry and drift on -> served throughput, latency, top-1, CPU split;
3. the same with ``serve --no-telemetry`` -> the cost of telemetry and drift.

Reported: medians over the rounds and the per-round ratios (served / raw, on / off), how the cores
were shared (client process, server process, inference inside it), top-1 against ``edgeloop
evaluate``, and the drift check: input and label drift of every 500-image window of the clean test
split and of each shift preset's copy, in folder order and shuffled (benchmarks/drift.py). Writes JSON
(default benchmarks/serving-result.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.engine import sysinfo
from tests.helpers import free_port

AGENT = [sys.executable, "-m", "device.cli"]


def _json(argv: list[str], timeout: float = 900) -> dict[str, Any]:
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def raw_throughput(model: Path, threads: int) -> float:
    r = _json([*AGENT, "bench", str(model), "--threads", str(threads), "--iterations", "50", "--json"])
    return float(r["raw_throughput_ips"])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310  (our own loopback server)
        out: dict[str, Any] = json.loads(r.read())
        return out


def served(model: Path, threads: int, data: Path, concurrency: int, telemetry: bool) -> dict[str, Any]:
    """One serve + loadgen run; the server's CPU time is read from its process before and after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*AGENT, "serve", str(model), "--threads", str(threads), "--listen", f"127.0.0.1:{port}"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*argv, *([] if telemetry else ["--no-telemetry"])], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            if proc.stdout is None or not proc.stdout.readline():
                raise RuntimeError("serve did not start")
            server = psutil.Process(proc.pid)
            cpu0 = sum(server.cpu_times()[:2])
            load = _json(
                [*AGENT, "loadgen", "--url", url, "--data", str(data), "--concurrency", str(concurrency), "--json"]
            )
            cpu1 = sum(server.cpu_times()[:2])
            stats = _get(url + "/v1/stats")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    wall = load["duration_s"]
    return {
        "throughput_rps": load["throughput_rps"],
        "requests": load["requests"],
        "errors": load["errors"],
        "top1": load["top1"],
        "latency_ms": load["latency_ms"],
        "wall_s": wall,
        "cpu_s": {
            "client": load["client_cpu_s"],
            "server": round(cpu1 - cpu0, 3),
            "inference_in_server": stats["totals"]["inference_s"],
        },
        "cores_busy": round((load["client_cpu_s"] + cpu1 - cpu0) / wall, 2) if wall else None,
        "mean_batch": stats["totals"]["mean_batch"],
        "drift": stats["drift"],
    }


def drift_check(model: Path, data: Path, window: int = 500) -> dict[str, Any]:
    """Input and label drift of every ``window``-image slice of the clean split and of each preset's copy,
    in folder order and shuffled (benchmarks/drift.py, which measures the same on its own)."""
    from benchmarks.drift import measure, shifted_sets  # a sibling script (benchmarks/ is no package)

    with tempfile.TemporaryDirectory() as tmp:
        sets = {"clean": data, **shifted_sets(data, Path(tmp))}
        return {"window": window, "threshold": 1.0, "sets": measure(model, sets, window)}


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="the CIFAR-10 test split (ImageFolder)")
    ap.add_argument("--model", type=Path, default=REPO / "host" / "zoo" / "resnet20.onnx")
    ap.add_argument("--threads", type=int, default=1, help="inference threads of bench and serve alike")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "serving-result.json")
    args = ap.parse_args()
    evaluate = _json(
        [
            sys.executable,
            "-m",
            "host.cli",
            "evaluate",
            str(args.model),
            "--data",
            str(args.data),
            "--iterations",
            "10",
            "--json",
        ]
    )
    rounds = []
    for i in range(args.rounds):
        raw = raw_throughput(args.model, args.threads)
        on = served(args.model, args.threads, args.data, args.concurrency, telemetry=True)
        off = served(args.model, args.threads, args.data, args.concurrency, telemetry=False)
        rounds.append(
            {
                "raw_ips": raw,
                "on": on,
                "off": off,
                "served_vs_raw": on["throughput_rps"] / raw,
                "telemetry_on_vs_off": on["throughput_rps"] / off["throughput_rps"],
            }
        )
        share = 100 * rounds[-1]["served_vs_raw"]
        print(
            f"round {i + 1}: raw {raw:,.0f} img/s, served {on['throughput_rps']:,.0f} ({share:.0f}%), "
            f"telemetry off {off['throughput_rps']:,.0f}",
            flush=True,
        )
    result = {
        "machine": sysinfo.machine(),
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "threads": args.threads,
        "concurrency": args.concurrency,
        "evaluate_top1": evaluate["top1"],
        "rounds": rounds,
        "median": {
            "raw_ips": _median(rounds, "raw_ips"),
            "served_vs_raw": _median(rounds, "served_vs_raw"),
            "telemetry_on_vs_off": _median(rounds, "telemetry_on_vs_off"),
        },
        "drift": drift_check(args.model, args.data),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
