"""The steps of one activation that work on one artifact: the signature check, which artifact to run,
fetching (or finding) and building it in a runtime of its own, and the golden-image self-test."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.activation.int8 import Loaded
from device.activation.records import ActivationError, prep_of
from device.config import AgentConfig
from device.engine import onnx_check, selftest
from device.engine.builder import EngineCache
from device.engine.runtimes.base import EngineError, Runtime, RuntimeConfig
from device.engine.runtimes.registry import AutoConfig
from device.fetch import FetchError, fetch, resolve_url
from device.state import AgentState
from shared import signing
from shared.digest import sha256_file
from shared.protocol import Artifact, Precision, ReleaseManifest

log = logging.getLogger(__name__)

DEVICE_URL = "device:"  # the url of an artifact made on the device: never downloaded


def check_signature(manifest: ReleaseManifest, keys: list[Ed25519PublicKey], required: bool) -> None:
    if manifest.signature is None and not required:
        log.warning("release %s is unsigned (accepted: require_signature is off)", manifest.ref)
        return
    try:
        signing.verify(manifest, keys)
    except signing.SignatureError as e:
        raise ActivationError("signature_invalid", str(e)) from e


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


def on_target(config: RuntimeConfig, dla: int | None) -> RuntimeConfig:
    """``config`` on DLA core ``dla``, or (None) on its GPU, where the backend has DLA cores (a ``dla_core``
    field); a backend without any runs as it is, and has no DLA core to put it on."""
    if "dla_core" in type(config).model_fields:
        return config.model_copy(update={"dla_core": dla})
    if dla is not None:
        raise ActivationError("runtime_unavailable", f"the {config.type} runtime has no DLA cores")
    return config


def check_expiry(manifest: ReleaseManifest, rollback: bool) -> str | None:
    """Refuse a deploy of a release past its signed ``not_after``; a signed rollback to one may run
    (it returns a warning for the report), so an expired previous release can still be gone back to."""
    if manifest.not_after is None or datetime.now(timezone.utc) <= manifest.not_after:
        return None
    message = f"release {manifest.ref} expired at {manifest.not_after.isoformat()}"
    if not rollback:
        raise ActivationError("release_expired", f"refusing {message}; cut a new release (edgeloop release create)")
    return message + ": rolled back to it anyway, as the signed rollback asked"


class ArtifactOpener:
    """Fetch (or find) an artifact, build its engine (cached) in a new runtime and load it.

    ``fp32_runtime`` (an opener for a DLA core) makes the runtimes FP32 artifacts build in: DLA runs no FP32,
    so the INT8 gate's FP32 reference runs on the GPU."""

    def __init__(
        self,
        config: AgentConfig,
        state: AgentState,
        cache: EngineCache,
        new_runtime: Callable[[], Runtime],
        manifest: ReleaseManifest,
        base_url: str | None,
        fp32_runtime: Callable[[], Runtime] | None = None,
    ) -> None:
        self.config, self.state, self.cache, self.new_runtime = config, state, cache, new_runtime
        self.manifest, self.base_url, self.fp32_runtime = manifest, base_url, fp32_runtime
        self.fetch_s = 0.0

    def fetch(self, artifact: Artifact) -> Path:
        """Download (or resume) the artifact into the state dir, checking its size and sha256."""
        dest = self.state.artifact_path(artifact.sha256)
        t0 = time.perf_counter()
        if artifact.url.startswith(DEVICE_URL):  # made here: it must be in the store already
            if not dest.is_file() or sha256_file(dest) != artifact.sha256:
                raise ActivationError("artifact_missing", f"the device-made {artifact.name} is not in the store")
            return dest
        try:
            url = resolve_url(artifact.url, self.base_url)
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
        self.fetch_s += time.perf_counter() - t0
        return dest

    def adopt(self, path: Path, artifact: Artifact) -> None:
        """File a device-made ONNX under its sha256, like a downloaded artifact."""
        dest = self.state.artifact_path(artifact.sha256)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        tmp.replace(dest)

    def open(self, artifact: Artifact, runtime: Runtime | None = None) -> Loaded:
        onnx = self.fetch(artifact)
        try:
            onnx_check.check(onnx, self.manifest.model.input_shape, self.config.max_artifact_mb << 20)
        except onnx_check.OnnxRejectedError as e:
            if runtime is not None:
                runtime.close()
            raise ActivationError("onnx_rejected", str(e)) from e
        if runtime is None:
            make = self.fp32_runtime if artifact.precision == "fp32" and self.fp32_runtime else self.new_runtime
            runtime = make()
        match_sparsity(runtime, artifact)
        try:
            engine, hit = self.cache.get_or_build(runtime, onnx, artifact.sha256, artifact.precision)
            runtime.load(engine)
        except EngineError as e:
            runtime.close()
            raise ActivationError("engine_build_failed", str(e)) from e
        if engine.input_shape != tuple(self.manifest.model.input_shape):
            runtime.close()
            raise ActivationError(
                "input_shape_mismatch",
                f"engine input {engine.input_shape} differs from the manifest's {self.manifest.model.input_shape}",
            )
        return Loaded(runtime, artifact, engine, hit, onnx)


def selftest_top1(runtime: Runtime, manifest: ReleaseManifest, artifact: Artifact, config: AgentConfig) -> float:
    """Golden-set top-1 of the loaded engine; below the release's own figure (minus a tolerance) fails."""
    try:
        top1 = selftest.golden_top1(runtime, manifest.model.classes, prep_of(manifest))
    except EngineError as e:
        raise ActivationError("selftest_failed", f"self-test could not run: {e}") from e
    floor = selftest.threshold(artifact.golden_top1, config.selftest_tolerance, config.selftest_min_top1)
    if top1 < floor:
        raise ActivationError(
            "selftest_failed", f"self-test top-1 {100 * top1:.1f}% on the golden images is below {100 * floor:.1f}%"
        )
    return top1
