"""``edgeloop demo``: the whole closed loop on one machine, offline, in well under a minute.

embedded MQTT broker + ``serve`` + three real agent processes (ONNX Runtime) -> signed releases of
the zoo baseline and its slimmed INT8 variant -> install the baseline everywhere -> roll the
compressed release out canary -> 25% -> 100% with the accuracy/latency gates -> the field (``field``): the
last agent serves night-time images and is flagged as drifted, the host pulls its field sample, adapts the
model to it (AdaBN) and rolls the adapted release out to that agent alone, gated on its field top-1 ->
summary tables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from host.demo.field import SAMPLE, print_field, run_field
from host.demo.rollouts import run_rollout, wait
from host.fleet.release import ReleaseStore, create_release
from host.fleet.rollout_config import RolloutConfig
from host.fleet.server import HostServer, ServeConfig
from host.fleet.store.records import RolloutDetail
from shared import signing
from shared.errors import EdgeloopError
from shared.ports import free_loopback_port
from shared.protocol import BenchSettings, DeployReport, ReleaseManifest
from shared.samples import golden_dir

log = logging.getLogger(__name__)

ZOO = Path(os.environ.get("EDGELOOP_ZOO") or Path(__file__).parents[1] / "zoo")  # override for experiments
BASELINE = ["resnet20.onnx", "resnet20-int8.onnx", "resnet20-int8-trt.onnx", "resnet20-fp16.onnx"]
SLIM = ["resnet20-slim.onnx", "resnet20-slim-int8.onnx", "resnet20-slim-int8-trt.onnx", "resnet20-slim-fp16.onnx"]
SLIM_CHECKPOINT = "resnet20-slim.pt"  # what the field act adapts: the model of SLIM


def _build_dir(work: Path, name: str, files: list[str]) -> Path:
    d = work / "build" / name
    d.mkdir(parents=True, exist_ok=True)
    present = [f for f in files if (ZOO / f).exists()]
    if not present:
        raise EdgeloopError(f"the zoo has none of {files}; run the compression recipes first (docs/workflow.md)")
    for f in present:
        shutil.copy(ZOO / f, d / f)
    card = ZOO / (files[0].removesuffix(".onnx") + ".json")
    if card.exists():
        shutil.copy(card, d / card.name)
    return d


def _agent_config(path: Path, device_id: str, broker_url: str, state: Path, pub: Path, serve_port: int | None) -> None:
    # the selection times each candidate for half a second; the field agent runs INT8, as a Jetson would, so its
    # field figures are the INT8 engine's; its reservoir keeps every image the field act serves it (SAMPLE)
    selection = "[selection]\nseconds = 0.5\n" + ('precision = "int8"\n' if serve_port is not None else "")
    serving = (
        f'[inference]\nlisten = "127.0.0.1:{serve_port}"\ntelemetry_interval_s = 1\n'
        f"[inference.drift]\nwindow = 200\nmin_images = 100\n[inference.reservoir]\ncapacity = {SAMPLE}\n"
        if serve_port is not None
        else ""
    )
    path.write_text(
        f'device_id = "{device_id}"\nfleet = "demo"\nstate_dir = {json.dumps(str(state))}\n'
        f"eval_dir = {json.dumps(str(golden_dir()))}\nstatus_interval_s = 5\ntrusted_keys = [{json.dumps(str(pub))}]\n"
        f'[broker]\nurl = "{broker_url}"\nprotocol = "3.1.1"\nreconnect_max_s = 2\n'
        f'{selection}[runtime]\ntype = "onnxruntime"\nintra_op_threads = 1\n{serving}'
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _releases(workdir: Path) -> tuple[ReleaseStore, ReleaseManifest, ReleaseManifest, Path]:
    """The signed baseline (1.0.0) and slimmed (1.1.0) releases, made once per work directory."""
    priv, pub = workdir / "keys" / "release.key", workdir / "keys" / "release.pub"
    if not priv.exists():
        signing.generate_keypair(priv, pub)
    store = ReleaseStore(workdir / "releases")
    base = (
        create_release(
            _build_dir(workdir, "baseline", BASELINE), "resnet20", "1.0.0", store, sign_key=priv, notes="zoo baseline"
        )
        if not store.versions("resnet20")
        else store.load("resnet20", "1.0.0")
    )
    slim_dir = _build_dir(workdir, "slim", SLIM)
    slim = (
        store.load("resnet20", "1.1.0")
        if "1.1.0" in store.versions("resnet20")
        else create_release(
            slim_dir,
            "resnet20",
            "1.1.0",
            store,
            sign_key=priv,
            source_top1=base.model.source_top1,
            notes="Network Slimming + INT8 of the baseline",
        )
    )
    print(
        f"  signed releases {base.ref} ({len(base.artifacts)} artifacts) and {slim.ref} ({len(slim.artifacts)}); "
        f"source top-1 {100 * base.model.source_top1:.2f}%"
    )
    return store, base, slim, pub


def _start_agents(
    agents: list[subprocess.Popen[bytes]], workdir: Path, devices: int, broker_url: str, pub: Path, serve_port: int
) -> None:
    """Start the agent processes, adding each to ``agents`` at once (so a failure still stops the others).
    The last one also serves its engine on ``serve_port`` (the field stage)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGELOOP_DEVICE_ID", None)
    for i in range(devices):
        d = workdir / "devices" / f"jetson-{i + 1:02d}"
        d.mkdir(parents=True, exist_ok=True)
        port = serve_port if i == devices - 1 else None
        if port is not None:  # a work directory used again: what an earlier field act served (its held-out
            shutil.rmtree(d / "state" / "reservoir", ignore_errors=True)  # images too) is not pulled again
        _agent_config(d / "agent.toml", f"jetson-{i + 1:02d}", broker_url, d / "state", pub, port)
        agents.append(
            subprocess.Popen(  # noqa: S603  (our own interpreter and module, no user input)
                [sys.executable, "-m", "device.cli", "run", "--config", str(d / "agent.toml")],
                stdout=(d / "agent.log").open("ab"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )


def _stop_agents(agents: list[subprocess.Popen[bytes]]) -> None:
    for a in agents:
        a.send_signal(signal.SIGTERM)
    for a in agents:
        try:
            a.wait(timeout=20)
        except subprocess.TimeoutExpired:
            a.kill()


def _two_rollouts(
    server: HostServer, base: ReleaseManifest, slim: ReleaseManifest, max_accuracy_drop: float
) -> RolloutDetail:
    """Install the baseline everywhere, then roll the compressed release out in gated waves."""
    bench = BenchSettings(warmup=10, iterations=200, throughput_batch=64)
    print("1) install the baseline on the whole fleet")
    first = run_rollout(
        server,
        base,
        RolloutConfig(waves=["100%"], max_accuracy_drop=max_accuracy_drop, bench=bench, wave_timeout_s=120),
        150,
    )
    if first.state != "completed":
        raise EdgeloopError(f"baseline install {first.state}: {first.reason}")
    print("2) roll out the compressed release: canary -> 25% -> 100%, gated on device measurements")
    return run_rollout(
        server,
        slim,
        RolloutConfig(max_accuracy_drop=max_accuracy_drop, bench=bench, wave_timeout_s=120),
        200,
    )


def run_demo(
    workdir: Path | None = None,
    keep_running: bool = False,
    devices: int = 3,
    http_port: int | None = None,
    max_accuracy_drop: float = 2.0,
) -> int:
    t0 = time.monotonic()
    # SIGTERM (systemd, `kill`, a CI runner) must stop the agents too: run the cleanup below
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeloop-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"edgeloop demo in {workdir}")
    store, base, slim, pub = _releases(workdir)
    cfg = ServeConfig(
        releases=store.root,
        store_url=str(workdir / "edgeloop.sqlite"),
        port=http_port or free_loopback_port(),
        embedded_broker=True,
        embedded_broker_port=free_loopback_port(),
        tick_s=0.3,
        command_key=pub.with_suffix(".key"),  # one demo key signs releases and commands
    )
    server = HostServer(cfg)
    server.start()
    agents: list[subprocess.Popen[bytes]] = []
    serve_port = free_loopback_port()
    try:
        _start_agents(agents, workdir, devices, cfg.broker_url, pub, serve_port)
        wait(
            lambda: len([x for x in server.store.devices("demo") if x.state == "online"]) >= devices,
            60,
            f"{devices} agents to come online",
        )
        print(f"  {devices} agents online (ONNX Runtime, golden set as local eval data); dashboard {cfg.base_url}")
        second = _two_rollouts(server, base, slim, max_accuracy_drop)
        outcome = run_field(
            server, workdir, f"jetson-{devices:02d}", f"http://127.0.0.1:{serve_port}", slim, ZOO / SLIM_CHECKPOINT,
            pub.with_suffix(".key"), max_accuracy_drop,
        )  # fmt: skip
        _summary(server, second)
        print_field(outcome)
        print(f"demo finished in {time.monotonic() - t0:.0f}s; dashboard: {cfg.base_url}")
        if keep_running:
            print("--keep-running: serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0 if second.state == "completed" and outcome.rollout.state in ("completed", "rolled_back") else 1
    finally:
        _stop_agents(agents)
        server.stop()
        if tmp is not None:
            tmp.cleanup()


def _selections(server: HostServer, rollout: RolloutDetail) -> None:
    """What each device measured before it chose (the DeployReport's candidates)."""
    print("what each device measured before it chose (img/s at its selection batch; * = chosen):")
    for received in server.store.rollout_reports(rollout.id, DeployReport):
        d = received.report
        tried = ", ".join(
            f"{'*' if c.chosen else ''}{c.runtime} {c.precision} "
            + (f"{c.throughput_ips:,.0f}" if c.throughput_ips else ("refused" if c.verified is False else "-"))
            for c in d.candidates
        )
        print(f"  {d.device_id}: {tried}")


def _summary(server: HostServer, rollout: RolloutDetail) -> None:
    from host.table import print_table

    rows = [
        (
            b.device_id,
            f"{b.release_name}@{b.release_version}",
            b.runtime,
            b.precision,
            b.p50_ms,
            b.p99_ms,
            b.throughput_ips,
            100 * b.top1 if b.top1 is not None else None,
            b.n_images,
        )
        for b in server.store.benchmark_series("demo")
    ]
    print_table(
        f"per-device measurements (rollout {rollout.id}: {rollout.state})",
        ["device", "release", "runtime", "precision", "p50 ms", "p99 ms", "img/s", "top-1 %", "images"],
        rows,
    )
    _selections(server, rollout)
    fleet = server.store.fleet("demo")
    print("fleet now: " + ", ".join(f"{d.device_id}={d.release}" for d in fleet))
    if rollout.reason:
        print(f"reason: {rollout.reason}")
