"""``EngineManager``: owns the active runtime and engine, activates releases and swaps them atomically.

An activation: signature -> choose the artifact -> fetch -> build (or reuse) -> self-test -> the INT8
gate (an INT8 engine must agree with the release's FP32) -> swap. The new engine is built and
checked in runtimes of its own next to the running one; only then is it swapped in (one assignment
under a lock) and the state file replaced. On any failure the running engine stays as it was.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.activation import steps, trials
from device.activation.int8 import Int8Gate, Int8Settings, Loaded
from device.activation.records import Activation, ActivationError, prep_of
from device.activation.select import Option, Selector, throughput
from device.config import AgentConfig
from device.engine.builder import EngineCache
from device.engine.calibration.calibset import MIN_IMAGES
from device.engine.runtimes import registry
from device.engine.runtimes.base import Engine, EngineError, Runtime, RuntimeUnavailableError, dla_target, parse_target
from device.engine.runtimes.registry import AutoConfig
from device.state import AgentState, Slot
from shared import datasets, signing
from shared.protocol import Precision, ReleaseManifest, version_key
from shared.samples import golden_dir

log = logging.getLogger(__name__)


class EngineManager:
    """Owns the active runtime + engine and swaps them atomically."""

    def __init__(self, config: AgentConfig, state: AgentState, cache: EngineCache) -> None:
        self.config = config
        self.state = state
        self.cache = cache
        self._keys: list[Ed25519PublicKey] = [signing.load_public_key(k) for k in config.trusted_keys]
        self._lock = threading.RLock()
        self._runtime: Runtime | None = None
        self._manifest: ReleaseManifest | None = None
        # serving takes the new engine on every swap, and closes the old one when its last batch ends
        self.on_swap: Callable[[Runtime, ReleaseManifest], None] | None = None
        self.close_replaced = True  # False when on_swap's owner closes replaced runtimes itself
        # the field images the INT8 gate may re-quantize from (the agent points it at its reservoir)
        self.calibration_files: Callable[[], list[Path]] = self._field_dir_files

    # -- queries ----------------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[tuple[Runtime, ReleaseManifest, Slot]]:
        with self._lock:
            if self._runtime is None or self._manifest is None or self.state.current is None:
                raise ActivationError("no_active_release", "no release is active on this device")
            yield self._runtime, self._manifest, self.state.current

    def running(self) -> tuple[ReleaseManifest, Slot]:
        """The active release's manifest and slot (raises ``no_active_release`` when there is none)."""
        with self.active() as (_, manifest, slot):
            return manifest, slot

    def describe(self) -> dict[str, Any]:
        """Lock-free snapshot for heartbeats (attribute reads are atomic; a swap is one assignment)."""
        rt = self._runtime
        return {
            "release": self.state.current.ref if self.state.current else None,
            "previous_release": self.state.previous.ref if self.state.previous else None,
            "runtime": rt.name if rt else None,
            "runtime_version": rt.version() if rt else None,
            "precision": self.state.current.precision if self.state.current else None,
            "accelerator": rt.accelerator() if rt else "cpu",
            "gpu": rt.uses_gpu() if rt else False,
            "gpu_mem_mb": rt.gpu_memory_mb() if rt else None,
        }

    def new_runtime(self, name: str | None = None) -> Runtime:
        """A new runtime of the configured kind; ``name`` picks one backend of ``auto`` and where it runs
        (``tensorrt:dla0``: on DLA core 0; a plain name: on its GPU or CPU)."""
        config = steps.with_cache_dirs(self.config.runtime, self.config.state_dir / "runtime-cache")
        if name is not None:
            backend, dla = parse_target(name)
            if isinstance(config, AutoConfig):
                config = config.backend(backend)
            config = steps.on_target(config, dla)
        try:
            return registry.create(config)
        except RuntimeUnavailableError as e:
            raise ActivationError("runtime_unavailable", str(e)) from e

    # -- start-up ---------------------------------------------------------------------------
    def restore(self) -> None:
        """Reload the engine of the release that was active before a restart."""
        slot = self.state.current
        if slot is None:
            return
        manifest = self.state.load_manifest(slot.ref)
        engine = self.cache.lookup(slot.engine)
        if manifest is None or engine is None:
            log.error("cannot restore %s: manifest or engine missing; waiting for a deploy", slot.ref)
            return
        target = dla_target(engine.runtime, engine.info.get("dla_core"))
        try:
            runtime = self.new_runtime(target)  # the backend (and DLA core) that built it, whatever auto picks now
        except ActivationError as e:
            log.error("cannot restore %s: %s", slot.ref, e)
            return
        try:
            runtime.load(engine)
        except EngineError as e:
            runtime.close()
            log.error("cannot reload the engine of %s: %s", slot.ref, e)
            return
        with self._lock:
            self._runtime, self._manifest = runtime, manifest
        self._notify(runtime, manifest)
        log.info("restored %s on %s", slot.ref, runtime.name)

    # -- activation -------------------------------------------------------------------------
    def verify(self, manifest: ReleaseManifest) -> None:
        steps.check_signature(manifest, self._keys, self.config.require_signature)

    def activate(
        self,
        manifest: ReleaseManifest,
        base_url: str | None,
        precision: Precision | None = None,
        rollback: bool = False,
    ) -> Activation:
        self.verify(manifest)
        expired = steps.check_expiry(manifest, rollback)
        current = self.state.current
        if (
            current is not None
            and not rollback
            and manifest.name == current.name
            and version_key(manifest.version) < version_key(current.version)
        ):
            raise ActivationError(
                "release_older",
                f"refusing {manifest.ref}: older than the running {current.ref} (send an explicit rollback)",
            )
        with self._lock:
            if current is not None and current.ref == manifest.ref and self._runtime is not None:
                rt = self._runtime
                previous = self.state.previous.ref if self.state.previous else None
                return Activation(
                    current, rt.engine, rt.name, rt.version(), rt.accelerator(), True, 0.0, 0.0, None, previous, True
                )
        act = self._activate_with(manifest, base_url, precision)
        if expired:
            act.events.append(("warning", "release_expired", expired))
        return act

    def _runtimes_to_try(self, manifest: ReleaseManifest | None = None) -> list[Runtime]:
        """One (unloaded) runtime of every backend the selection may use, highest priority first (of those
        ``manifest`` ships to: with ``measure`` off the first of them is the only one)."""
        config, pin = self.config.runtime, self.config.selection.runtime
        if not isinstance(config, AutoConfig):
            return [self.new_runtime()]
        if pin is not None:
            return [self.new_runtime(pin)]
        names = [n for n in registry.names() if registry.runtime_class(n).probe() is None]
        if not names:
            self.new_runtime()  # raises runtime_unavailable with every backend's reason
        if manifest is not None and any(manifest.ships_to(n) for n in names):
            names = [n for n in names if manifest.ships_to(n)]  # none: plan() says which runtimes it wants
        return [self.new_runtime(n) for n in (names if self.config.selection.measure else names[:1])]

    def _plan(self, manifest: ReleaseManifest, precision: Precision | None) -> list[Option]:
        s = self.config.selection
        can_calibrate = (
            s.measure and s.calibrate and self.config.int8.verify and len(self.calibration_files()) >= MIN_IMAGES
        )
        runtimes = self._runtimes_to_try(manifest)
        try:
            return trials.plan(manifest, runtimes, precision or s.precision, can_calibrate)
        finally:
            for rt in runtimes:
                rt.close()

    def _activate_with(
        self, manifest: ReleaseManifest, base_url: str | None, precision: Precision | None
    ) -> Activation:
        self.state.store_base_url(manifest.ref, base_url)
        openers: dict[str, steps.ArtifactOpener] = {}

        def opener_for(name: str) -> steps.ArtifactOpener:
            if name not in openers:
                new, fp32 = self._factories(name)
                openers[name] = steps.ArtifactOpener(self.config, self.state, self.cache, new, manifest, base_url, fp32)
            return openers[name]

        runner = trials.TrialRunner(manifest, self.config, opener_for, self._gate_factory(manifest))
        chosen = Selector(self.config.selection, runner, throughput(self.config.selection)).run(
            self._plan(manifest, precision)
        )
        loaded = chosen.loaded
        a = loaded.artifact
        slot = Slot(
            manifest.name, manifest.version, a.name, a.sha256, a.precision, _digest_of(loaded.engine, self.cache)
        )
        self._swap(loaded.runtime, manifest, slot)
        log.info("activated %s (%s, %s, %s)", manifest.ref, a.name, loaded.runtime.name, a.precision)
        rt, engine = loaded.runtime, loaded.engine
        return Activation(
            slot,
            engine,
            rt.name,
            rt.version(),
            rt.accelerator(),
            loaded.cache_hit,
            sum(o.fetch_s for o in openers.values()),
            0.0 if loaded.cache_hit else engine.build_s,
            chosen.top1,
            self.state.previous.ref if self.state.previous else None,
            candidates=chosen.candidates,
            events=chosen.events,
            selection_s=chosen.seconds,
        )

    def _factories(self, target: str) -> tuple[Callable[[], Runtime], Callable[[], Runtime] | None]:
        """New runtimes of ``target``, and (on a DLA core, which runs no FP32) of its GPU for FP32 artifacts."""
        backend, dla = parse_target(target)
        gpu = functools.partial(self.new_runtime, backend) if dla is not None else None
        return functools.partial(self.new_runtime, target), gpu

    def _gate_factory(self, manifest: ReleaseManifest) -> Callable[[steps.ArtifactOpener], Int8Gate]:
        """The INT8 gate of one runtime's opener; the labelled images are read once per activation."""
        prep = prep_of(manifest)
        c = self.config.int8
        data: list[datasets.LabelledImages] = []

        def gate(opener: steps.ArtifactOpener) -> Int8Gate:
            if not data:
                spec = self.config.eval_dir or golden_dir()
                data.append(datasets.load_labelled(spec, manifest.model.classes, size=prep.size, limit=c.images))
            settings = Int8Settings(c.max_drop_points, c.min_agreement, c.calibration_images)
            images, labels = data[0].images, data[0].labels
            return Int8Gate(manifest, images, labels, prep, opener.open, opener.adopt, self.calibration_files, settings)

        return gate

    # -- device-made engines (recalibrate) ------------------------------------------------------
    def opener(self, manifest: ReleaseManifest, base_url: str | None) -> steps.ArtifactOpener:
        """Fetches and builds artifacts of ``manifest`` in new runtimes of the running one's kind (relative
        artifact URLs resolve against ``base_url``, else where its activation fetched from)."""
        base = base_url or self.state.base_url(manifest.ref)
        if self._runtime is None:
            return steps.ArtifactOpener(self.config, self.state, self.cache, self.new_runtime, manifest, base)
        new, fp32 = self._factories(self._runtime.target())
        return steps.ArtifactOpener(self.config, self.state, self.cache, new, manifest, base, fp32)

    def adopt(self, loaded: Loaded, manifest: ReleaseManifest) -> Slot:
        """Make ``loaded`` (an engine of the running release, e.g. re-calibrated) the active one."""
        a = loaded.artifact
        slot = Slot(
            manifest.name, manifest.version, a.name, a.sha256, a.precision, _digest_of(loaded.engine, self.cache)
        )
        self._swap(loaded.runtime, manifest, slot)
        log.info("now running %s of %s (%s)", a.name, manifest.ref, a.precision)
        return slot

    def _field_dir_files(self) -> list[Path]:
        d = self.config.field_dir
        if d is None:
            return []
        return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES)

    def _swap(self, runtime: Runtime, manifest: ReleaseManifest, slot: Slot) -> None:
        self.state.store_manifest(manifest)
        with self._lock:  # the swap: one state write + one assignment
            old = self._runtime
            self.state.activate(slot)
            self._runtime, self._manifest = runtime, manifest
        self._notify(runtime, manifest)
        if old is not None and self.close_replaced:
            old.close()

    def _notify(self, runtime: Runtime, manifest: ReleaseManifest) -> None:
        if self.on_swap is None:
            return
        try:
            self.on_swap(runtime, manifest)
        except Exception:  # serving keeps its previous engine; the activation itself stands
            log.exception("the swap hook failed for %s", manifest.ref)

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None


def _digest_of(engine: Engine, cache: EngineCache) -> str:
    return engine.path.parent.relative_to(cache.root).parts[0]
