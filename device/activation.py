"""Activating a release: verify -> fetch -> build (or reuse) -> self-test -> atomic swap.

The new engine is built and self-tested in a second runtime next to the running one; only then is
it swapped in (one assignment under a lock) and the state file replaced. On any failure the
running engine stays as it was. The previous release stays on disk for rollback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device import selftest
from device.builder import EngineCache
from device.config import AgentConfig
from device.fetch import FetchError, fetch, resolve_url
from device.runtimes import registry
from device.runtimes.base import Engine, EngineError, Runtime, RuntimeConfig, RuntimeUnavailableError
from device.runtimes.registry import AutoConfig
from device.state import AgentState, Slot
from shared import signing
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.protocol import Artifact, Precision, ReleaseManifest, ReleaseRef, version_key

log = logging.getLogger(__name__)


class ActivationError(EdgeloopError):
    """An activation that was refused or failed; ``code`` names the reason in the EventReport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Activation:
    slot: Slot
    engine: Engine
    runtime_name: str
    runtime_version: str
    accelerator: str
    cache_hit: bool
    fetch_s: float
    build_s: float
    selftest_top1: float | None
    previous: ReleaseRef | None
    already_active: bool = False


def prep_of(manifest: ReleaseManifest) -> Preprocessing:
    p = manifest.model.preprocessing
    return Preprocessing(mean=p.mean, std=p.std, size=p.size)


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

    # -- queries ----------------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[tuple[Runtime, ReleaseManifest, Slot]]:
        with self._lock:
            if self._runtime is None or self._manifest is None or self.state.current is None:
                raise ActivationError("no_active_release", "no release is active on this device")
            yield self._runtime, self._manifest, self.state.current

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

    def new_runtime(self) -> Runtime:
        try:
            return registry.create(with_cache_dirs(self.config.runtime, self.config.state_dir / "runtime-cache"))
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
        runtime = self.new_runtime()
        try:
            runtime.load(engine)
        except EngineError as e:
            runtime.close()
            log.error("cannot reload the engine of %s: %s", slot.ref, e)
            return
        with self._lock:
            self._runtime, self._manifest = runtime, manifest
        log.info("restored %s on %s", slot.ref, runtime.name)

    # -- activation -------------------------------------------------------------------------
    def verify(self, manifest: ReleaseManifest) -> None:
        if manifest.signature is None and not self.config.require_signature:
            log.warning("release %s is unsigned (accepted: require_signature is off)", manifest.ref)
            return
        try:
            signing.verify(manifest, self._keys)
        except signing.SignatureError as e:
            raise ActivationError("signature_invalid", str(e)) from e

    def choose(self, manifest: ReleaseManifest, runtime: Runtime, precision: Precision | None) -> Artifact:
        wanted = precisions_to_try(runtime, precision)
        for p in wanted:
            try:
                return manifest.artifact_for(runtime.name, p)
            except EdgeloopError:
                continue
        raise ActivationError(
            "no_suitable_artifact",
            f"release {manifest.ref} has no artifact {runtime.name} can run at {'/'.join(wanted)}",
        )

    def activate(
        self,
        manifest: ReleaseManifest,
        base_url: str | None,
        precision: Precision | None = None,
        rollback: bool = False,
    ) -> Activation:
        self.verify(manifest)
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
                return Activation(
                    current,
                    rt.engine,
                    rt.name,
                    rt.version(),
                    rt.accelerator(),
                    True,
                    0.0,
                    0.0,
                    None,
                    self.state.previous.ref if self.state.previous else None,
                    True,
                )
        runtime = self.new_runtime()
        try:
            return self._activate_with(runtime, manifest, base_url, precision)
        except BaseException:
            runtime.close()
            raise

    def _activate_with(
        self, runtime: Runtime, manifest: ReleaseManifest, base_url: str | None, precision: Precision | None
    ) -> Activation:
        artifact = self.choose(manifest, runtime, precision)
        match_sparsity(runtime, artifact)
        t0 = time.perf_counter()
        dest = self._fetch(artifact, base_url)
        fetch_s = time.perf_counter() - t0
        try:
            engine, hit = self.cache.get_or_build(runtime, dest, artifact.sha256, artifact.precision)
            runtime.load(engine)
        except EngineError as e:
            raise ActivationError("engine_build_failed", str(e)) from e
        if engine.input_shape != tuple(manifest.model.input_shape):
            raise ActivationError(
                "input_shape_mismatch",
                f"engine input {engine.input_shape} differs from the manifest's {manifest.model.input_shape}",
            )
        top1 = self._selftest(runtime, manifest, artifact)
        slot = Slot(
            manifest.name,
            manifest.version,
            artifact.name,
            artifact.sha256,
            artifact.precision,
            _digest_of(engine, self.cache),
        )
        self._swap(runtime, manifest, slot)
        log.info("activated %s (%s, %s, %s)", manifest.ref, artifact.name, runtime.name, artifact.precision)
        return Activation(
            slot,
            engine,
            runtime.name,
            runtime.version(),
            runtime.accelerator(),
            hit,
            fetch_s,
            0.0 if hit else engine.build_s,
            top1,
            self.state.previous.ref if self.state.previous else None,
        )

    def _fetch(self, artifact: Artifact, base_url: str | None) -> Path:
        """Download (or resume) the artifact into the state dir, checking its size and sha256."""
        dest = self.state.artifact_path(artifact.sha256)
        try:
            url = resolve_url(artifact.url, base_url)
            fetch(
                url,
                dest,
                artifact.sha256,
                artifact.size,
                self.config.max_artifact_mb << 20,
                timeout=self.config.http_timeout_s,
            )
        except FetchError as e:
            raise ActivationError(e.code, str(e)) from e
        return dest

    def _selftest(self, runtime: Runtime, manifest: ReleaseManifest, artifact: Artifact) -> float:
        """Golden-set top-1 of the loaded engine; below the release's own figure (minus a tolerance) fails."""
        try:
            top1 = selftest.golden_top1(runtime, manifest.model.classes, prep_of(manifest))
        except EngineError as e:
            raise ActivationError("selftest_failed", f"self-test could not run: {e}") from e
        floor = selftest.threshold(artifact.golden_top1, self.config.selftest_tolerance, self.config.selftest_min_top1)
        if top1 < floor:
            raise ActivationError(
                "selftest_failed",
                f"self-test top-1 {100 * top1:.1f}% on the golden images is below {100 * floor:.1f}%",
            )
        return top1

    def _swap(self, runtime: Runtime, manifest: ReleaseManifest, slot: Slot) -> None:
        self.state.store_manifest(manifest)
        with self._lock:  # the swap: one state write + one assignment
            old = self._runtime
            self.state.activate(slot)
            self._runtime, self._manifest = runtime, manifest
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None


def precisions_to_try(runtime: Runtime, asked: Precision | None) -> tuple[Precision, ...]:
    """The asked precision where the runtime runs it natively; else (e.g. int8 on a GPU without fast INT8)
    the less reduced ones it does run, best first; with nothing asked, all it runs, best first."""
    supported = runtime.supported_precisions()
    if asked is None or asked in supported:
        return (asked,) if asked else supported
    rank = ("fp32", "fp16", "int8").index
    lower = tuple(p for p in supported if rank(p) < rank(asked))
    log.warning("%s does not run %s natively on %s; trying %s", runtime.name, asked, runtime.accelerator(), lower)
    return lower


def match_sparsity(runtime: Runtime, artifact: Artifact) -> None:
    """The device config allows sparse kernels (a backend's ``sparse_weights``); the manifest's
    ``Artifact.sparsity`` says whether this file has the 2:4 weights they need."""
    config = runtime.config
    if "sparse_weights" not in type(config).model_fields:
        return
    allowed = bool(getattr(config, "sparse_weights", False))
    if artifact.sparsity == "2:4" and not allowed:
        log.info("%s has 2:4 sparse weights; sparse_weights = true would let %s use them", artifact.name, runtime.name)
    elif artifact.sparsity != "2:4" and allowed:
        runtime.config = config.model_copy(update={"sparse_weights": False})  # dense file: nothing to gain


def with_cache_dirs(config: RuntimeConfig, root: Path) -> RuntimeConfig:
    """``config`` with every backend's unset ``cache_dir`` (persisted build state, such as TensorRT's timing
    caches) set to ``root/<backend>``: in the state directory, beside the engine cache."""
    if isinstance(config, AutoConfig):
        backends = {name: with_cache_dirs(c, root) for name, c in config.backends.items()}
        return config.model_copy(update={"backends": backends})
    if "cache_dir" in type(config).model_fields and getattr(config, "cache_dir", None) is None:
        return config.model_copy(update={"cache_dir": root / config.type})
    return config


def _digest_of(engine: Engine, cache: EngineCache) -> str:
    return engine.path.parent.relative_to(cache.root).parts[0]
