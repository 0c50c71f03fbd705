"""The demo's field act: one device's input drifts, the host adapts the model to what it pulled from that
device, and rolls the adapted release out to that device alone, gated on its field accuracy.

The device (the last agent, which serves its engine over HTTP) sees the golden set split in two by
position in each class folder. Its *site* scenes (even positions) it serves by day, then at night: each
through the ``night`` shift preset (``host.factory.field.shift``) in several draws, as a camera sees a
scene night after night. The *held-out* scenes (odd positions) are never served before the adaptation;
their night frames are labelled, and are what field top-1 is measured on, before and after.

1. serving, with ``loadgen``: day, then night; the TelemetryReports carry the input drift to the host;
2. the host pulls the device's reservoir of served images (``edgeloop fleet sample``'s code path, over
   the REST API of the demo's ``serve``);
3. ``host.demo.adapt``: AdaBN on those images, released as the next version, signed;
4. a rollout of it to that device only. Its own gates run as in any rollout (the device's top-1 on its
   clean eval set against the source, latency). The field gate is here: the device's top-1 on the
   held-out night frames, asked of its inference API with the old engine and again with the new one; a
   release that is not better there is rolled back. (The rollout gates measure top-1 only on a device's
   configured eval set, so they cannot judge a field set.)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.engine.loadgen import loadgen
from host.demo.adapt import adapt_release, next_version
from host.demo.rollouts import FLEET, run_rollout, wait
from host.factory.field.shift import shift_dataset
from host.fleet.client import ApiClient
from host.fleet.rollout_config import RolloutConfig
from host.fleet.server import HostServer
from host.fleet.store.records import TERMINAL, DriftFlag, RolloutDetail
from shared import datasets
from shared.errors import EdgeloopError
from shared.protocol import BenchSettings, ReleaseManifest
from shared.samples import golden_dir

NIGHT_DRAWS = 4  # night frames served per site scene
HELD_OUT_DRAWS = 5  # labelled night frames per held-out scene (seeds 0..4; the served ones use 100..)
SAMPLE = 500  # images pulled: the whole reservoir (agent.toml's capacity), day and night


@dataclass(frozen=True)
class FieldData:
    day: Path  # the site scenes as they are (ImageFolder)
    night: Path  # their night frames: draw-N/<class>/...
    held_out: Path  # the held-out scenes' night frames, labelled the same way


@dataclass
class FieldOutcome:
    device: str
    drift_before: float
    drift_after: float
    pulled: int
    before: ReleaseManifest
    after: ReleaseManifest
    adapt_s: float
    rollout: RolloutDetail
    n_held_out: int
    top1_before: float
    top1_after: float | None  # None: the rollout's own gates turned it back
    clean_before: float | None
    clean_after: float | None
    kept: bool  # the field gate's verdict: the adapted release stays on the device


def field_data(workdir: Path) -> FieldData:
    """The site / held-out split of the golden set and their night frames (made once per work directory)."""
    root = workdir / "field"
    data = FieldData(root / "site" / "day", root / "site" / "night", root / "held-out" / "night")
    if (root / "done").exists():
        return data
    shutil.rmtree(root, ignore_errors=True)
    clean_held_out = root / "held-out" / "day"
    by_class: dict[str, list[Path]] = {}
    for s in datasets.list_samples(golden_dir()):
        by_class.setdefault(s.class_name, []).append(Path(s.source))
    for cls, files in by_class.items():
        for i, f in enumerate(files):
            dest = (data.day if i % 2 == 0 else clean_held_out) / cls / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    for k in range(NIGHT_DRAWS):
        shift_dataset(data.day, data.night / f"draw-{k}", "night", seed=100 + k)
    for k in range(HELD_OUT_DRAWS):
        shift_dataset(clean_held_out, data.held_out / f"draw-{k}", "night", seed=k)
    (root / "done").touch()
    return data


def _drift(server: HostServer, device: str) -> DriftFlag | None:
    d = next((x for x in server.store.fleet(FLEET) if x.device_id == device), None)
    return d.drift if d is not None else None


def _drifted(server: HostServer, device: str) -> DriftFlag | None:
    d = _drift(server, device)
    return d if d is not None and d.drifted else None


def _serve(url: str, data: Path) -> dict[str, Any]:
    result = loadgen(url, data, concurrency=4)
    if result["errors"]:
        raise EdgeloopError(f"serving {data} failed: {result['errors']} errors ({result['errors_by_status']})")
    return result


def _field_top1(url: str, data: Path, release: ReleaseManifest, attempts: int = 3) -> tuple[float, int]:
    """Top-1 of the device's answers on the labelled ``data``, every answer from ``release``'s engine (asked
    again, a second later, while some came from another: the device swapping engines)."""
    for attempt in range(attempts):
        result = _serve(url, data)
        answered = {str(k): v for k, v in result["releases"].items()}
        if set(answered) == {str(release.ref)}:
            return float(result["top1"]), int(result["n_labelled"])
        if attempt + 1 < attempts:
            time.sleep(1.0)
    raise EdgeloopError(f"expected every answer from {release.ref}, got {answered}")


def _clean_top1(server: HostServer, device: str, release: ReleaseManifest) -> float | None:
    """The device's own top-1 on its clean eval set with ``release`` (its latest benchmark of it)."""
    mine = [
        b.top1
        for b in server.store.benchmark_series(FLEET)
        if b.device_id == device and (b.release_name, b.release_version) == (release.name, release.version)
    ]
    return mine[-1] if mine else None


def run_field(
    server: HostServer,
    workdir: Path,
    device: str,
    url: str,
    running: ReleaseManifest,
    checkpoint: Path,
    sign_key: Path,
    max_accuracy_drop: float,
) -> FieldOutcome:
    data = field_data(workdir)
    print(f"3) the field: {device} serves its scenes by day, then at night (the 'night' shift preset)")
    day = _serve(url, data.day)
    before = wait(lambda: _drift(server, device), 30, "the day-time drift score")
    night = _serve(url, data.night)
    flagged = wait(lambda: _drifted(server, device), 30, f"{device} flagged as drifted")
    print(
        f"  served {day['requests']} day, then {night['requests']} night images over HTTP: input drift "
        f"{before.score:.2f} -> {flagged.score:.2f} (threshold {flagged.threshold:.1f}): DRIFTED"
    )
    print(f"4) pull {device}'s field sample (edgeloop fleet sample): its reservoir of served images")
    sample_dir = workdir / "field" / "sample"
    shutil.rmtree(sample_dir, ignore_errors=True)
    pulled = _pull(server, device, sample_dir)
    print(f"  {pulled['received']} images in {sample_dir}")
    print(f"5) adapt {checkpoint.name} to them (AdaBN, no labels) and sign the release")
    store = server.release_store
    version = next_version(store, running.name)
    adapted = adapt_release(
        checkpoint, sample_dir, workdir / "build" / "field", store, running.name, version, sign_key,
        running.model.source_top1, device,
    )  # fmt: skip
    release = adapted.release
    print(f"  signed {release.ref} ({len(release.artifacts)} artifacts: FP32 + INT8) in {adapted.seconds:.0f}s")
    rollout, (top1_before, top1_after, n), kept = _canary(
        server, url, data, running, release, device, max_accuracy_drop
    )
    return FieldOutcome(
        device=device,
        drift_before=before.score,
        drift_after=flagged.score,
        pulled=int(pulled["received"]),
        before=running,
        after=release,
        adapt_s=adapted.seconds,
        rollout=rollout,
        n_held_out=n,
        top1_before=top1_before,
        top1_after=top1_after,
        clean_before=_clean_top1(server, device, running),
        clean_after=_clean_top1(server, device, release),
        kept=kept,
    )


def _canary(
    server: HostServer,
    url: str,
    data: FieldData,
    running: ReleaseManifest,
    release: ReleaseManifest,
    device: str,
    max_accuracy_drop: float,
) -> tuple[RolloutDetail, tuple[float, float | None, int], bool]:
    """Act 6: the adapted release to ``device`` alone, then kept only if its held-out field top-1 is better."""
    print(f"6) canary: {release.ref} to {device} only, gated on its top-1 on held-out night images")
    top1_before, n = _field_top1(url, data.held_out, running)
    bench = BenchSettings(warmup=10, iterations=200, throughput_batch=64)
    cfg = RolloutConfig(waves=["1"], max_accuracy_drop=max_accuracy_drop, bench=bench, wave_timeout_s=120)
    rollout = run_rollout(server, release, cfg, 150, device=device)
    kept, top1_after = False, None
    if rollout.state == "completed":
        top1_after, _ = _field_top1(url, data.held_out, release)
        kept = top1_after > top1_before
        verdict = "better: kept" if kept else "not better: rolled back"
        print(
            f"  field top-1 on {n} held-out night images: {100 * top1_before:.2f}% -> {100 * top1_after:.2f}% "
            f"({100 * (top1_after - top1_before):+.2f} pts), {verdict}"
        )
        if not kept:
            server.controller.rollback(rollout.id, "field top-1 not better than the running release's")
            rollout = wait(lambda: _ended(server, rollout.id), 120, f"the rollback of {rollout.id}")
    else:
        print(f"  the rollout ended {rollout.state}: {rollout.reason}")
    return rollout, (top1_before, top1_after, n), kept


def _ended(server: HostServer, rollout_id: str) -> RolloutDetail | None:
    r = server.store.rollout(rollout_id)
    return r if r is not None and r.state in TERMINAL else None


def _pull(server: HostServer, device: str, out: Path) -> dict[str, Any]:
    from host.fleet.client import fetch_samples

    return fetch_samples(ApiClient(server.base_url), FLEET, device, SAMPLE, out, timeout=60)


def print_field(o: FieldOutcome) -> None:
    from host.table import print_table

    def pct(v: float | None) -> float | None:
        return None if v is None else 100 * v

    print_table(
        f"field act on {o.device}: {o.after.ref} {'kept' if o.kept else 'rolled back'} ({o.rollout.state})",
        ["", "release", "model", f"night top-1 % ({o.n_held_out} held-out)", "clean top-1 %"],
        [
            ("before", str(o.before.ref), "as released", pct(o.top1_before), pct(o.clean_before)),
            ("after", str(o.after.ref), f"AdaBN on {o.pulled} pulled images", pct(o.top1_after), pct(o.clean_after)),
        ],
    )
