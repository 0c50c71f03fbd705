"""The demo's rollouts: start one (to the fleet, or to one device), print each wave as it finishes, wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from host.fleet.rollout_config import RolloutConfig
from host.fleet.server import HostServer
from host.fleet.store.records import TERMINAL, WAVE_FINISHED, RolloutDetail
from shared.errors import EdgeloopError
from shared.protocol import ReleaseManifest

FLEET = "demo"
T = TypeVar("T")


def wait(predicate: Callable[[], T | None], timeout: float, what: str, poll: float = 0.25) -> T:
    """The first truthy value of ``predicate``, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise EdgeloopError(f"timed out after {timeout:.0f}s waiting for {what}")


def _print_finished_waves(r: RolloutDetail, seen: set[tuple[int, str]]) -> None:
    for w in r.waves:
        if w.state in WAVE_FINISHED and (w.wave, w.state) not in seen:
            seen.add((w.wave, w.state))
            detail = ", ".join(
                f"{d.device_id} top-1 {100 * d.top1:.1f}% p99 {d.p99_ms or 0.0:.2f} ms"
                if d.top1 is not None
                else f"{d.device_id} {d.state}"
                for d in r.members(w.wave)
            )
            print(f"    wave {w.wave + 1}/{len(r.waves)} {w.state}: {detail}")


def run_rollout(
    server: HostServer, manifest: ReleaseManifest, cfg: RolloutConfig, timeout: float, device: str | None = None
) -> RolloutDetail:
    """Roll ``manifest`` out (to ``device`` alone if given) and wait until the rollout is over."""
    if device is None:
        rid = server.controller.create(manifest, FLEET, cfg)
        print(f"  rollout {rid}: {manifest.ref} waves {cfg.waves}, gate top-1 >= source - {cfg.max_accuracy_drop} pts")
    else:
        rid = server.controller.create(manifest, FLEET, cfg.model_copy(update={"devices": [device], "waves": ["100%"]}))
        print(f"  rollout {rid}: {manifest.ref} to {device} only, gate top-1 >= source - {cfg.max_accuracy_drop} pts")
    seen: set[tuple[int, str]] = set()

    def done() -> RolloutDetail | None:
        r = server.store.rollout(rid)
        if r is None:
            return None
        _print_finished_waves(r, seen)
        return r if r.state in TERMINAL else None

    return wait(done, timeout, f"rollout {rid}")
