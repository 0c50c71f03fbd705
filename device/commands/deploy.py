"""``deploy``, ``rollback`` and ``benchmark``: activate a release (verify, fetch, build, self-test, swap),
report it, and measure what runs on the device."""

from __future__ import annotations

import statistics
import time
from typing import Any

from device.activation import ActivationError, prep_of
from device.commands.base import AgentContext, CommandHandler, register
from device.engine import bench, sysinfo
from shared import datasets
from shared.protocol import (
    BenchmarkCommand,
    BenchmarkReport,
    BenchSettings,
    DeployCommand,
    DeployReport,
    LatencyStats,
    PowerStats,
    Precision,
    ReleaseManifest,
    RollbackCommand,
)


@register
class DeployHandler(CommandHandler):
    kind = "deploy"

    def handle(self, agent: AgentContext, cmd: DeployCommand) -> None:
        if activate(agent, cmd.manifest, cmd.base_url, cmd, "deploy", cmd.precision):
            agent.report(run_benchmark(agent, cmd.bench, cmd.rollout_id, cmd.message_id))


@register
class RollbackHandler(CommandHandler):
    kind = "rollback"

    def handle(self, agent: AgentContext, cmd: RollbackCommand) -> None:
        target = cmd.target or (agent.state.previous.ref if agent.state.previous else None)
        if target is None:
            raise ActivationError("rollback_target_unknown", "no previous release to roll back to")
        manifest = cmd.manifest or agent.state.load_manifest(target)
        if manifest is None or manifest.ref != target:
            raise ActivationError(
                "rollback_target_unknown", f"no manifest for {target} on this device or in the command"
            )
        activate(agent, manifest, cmd.base_url, cmd, "rollback")


@register
class BenchmarkHandler(CommandHandler):
    kind = "benchmark"

    def handle(self, agent: AgentContext, cmd: BenchmarkCommand) -> None:
        agent.report(run_benchmark(agent, cmd.bench, cmd.rollout_id, cmd.message_id))


def activate(
    agent: AgentContext,
    manifest: ReleaseManifest,
    base_url: str | None,
    cmd: DeployCommand | RollbackCommand,
    action: str,
    precision: Precision | None = None,
) -> bool:
    """Activate and send the DeployReport (ok or not); True when the release now runs."""
    previous = agent.state.current.ref if agent.state.current else None
    common: dict[str, Any] = {
        "device_id": agent.device_id,
        "rollout_id": cmd.rollout_id,
        "command_id": cmd.message_id,
        "release": manifest.ref,
        "action": action,
    }
    try:
        act = agent.engines.activate(manifest, base_url, precision, rollback=(action == "rollback"))
    except ActivationError as e:
        agent.event("error", e.code, str(e), command_id=cmd.message_id, rollout_id=cmd.rollout_id, release=manifest.ref)
        agent.report(DeployReport(ok=False, error=str(e)[:4000], previous_release=previous, **common))
        return False
    for level, code, message in act.events:
        agent.event(level, code, message, command_id=cmd.message_id, rollout_id=cmd.rollout_id, release=manifest.ref)
    agent.report(
        DeployReport(
            ok=True,
            previous_release=act.previous if not act.already_active else previous,
            artifact=act.slot.artifact,
            runtime=act.runtime_name,
            runtime_version=act.runtime_version,
            precision=act.slot.precision,
            accelerator=act.accelerator,
            cache_hit=act.cache_hit,
            fetch_s=act.fetch_s,
            build_s=act.build_s,
            selftest_top1=act.selftest_top1,
            candidates=tuple(act.candidates[:32]),
            selection_s=act.selection_s,
            **common,
        )
    )
    agent.publish_status()
    return True


def run_benchmark(
    agent: AgentContext, settings: BenchSettings, rollout_id: str | None = None, command_id: Any = None
) -> BenchmarkReport:
    """Latency, raw throughput and (with an eval set) top-1 of the active engine, within ``max_seconds``
    (each stage stops at the deadline, so one benchmark never holds up the commands behind it)."""
    deadline = time.perf_counter() + settings.max_seconds
    with agent.engines.active() as (rt, manifest, slot):
        lat = bench.measure_latency(rt, settings.batch, settings.warmup, settings.iterations, deadline=deadline)
        # the board's power is sampled in the raw rounds (jtop or tegrastats; None off a Jetson)
        raw = bench.raw_throughput(rt, settings.throughput_batch, settings.throughput_rounds, deadline=deadline)
        top1 = n_images = e2e = None
        if settings.evaluate and agent.config.eval_dir is not None:
            samples = datasets.list_samples(agent.config.eval_dir)
            limit = settings.eval_limit or agent.config.eval_limit
            if limit:
                samples = datasets.balanced_subset(samples, limit)
            ev = bench.evaluate(rt, samples, manifest.model.classes, prep_of(manifest), deadline=deadline)
            top1, n_images, e2e = ev.top1, ev.n_images, ev.throughput_ips
        power = raw.power_figures()
        return BenchmarkReport(
            device_id=agent.device_id,
            rollout_id=rollout_id,
            command_id=command_id,
            release=slot.ref,
            runtime=rt.name,
            runtime_version=rt.version(),
            precision=slot.precision,
            accelerator=rt.accelerator(),
            batch=settings.batch,
            iterations=max(1, lat.iterations),
            latency_ms=LatencyStats(**lat.latency_ms),
            raw_throughput_ips=statistics.median(raw.ips),
            top1=top1,
            n_images=n_images,
            end_to_end_throughput_ips=e2e,
            system=sysinfo.collect(rt.gpu_memory_mb()),
            power=PowerStats.model_validate(power) if power is not None else None,
        )
