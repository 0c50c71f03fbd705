"""Engine cache: build each (model, precision, runtime, accelerator, options) once, keep it.

Engines are not portable between TensorRT versions or GPUs, so the cache key holds the ONNX
sha256, precision, runtime name + version, accelerator (GPU name + compute capability, and the DLA
core), the build options and, on a Jetson, the L4T release: a JetPack upgrade brings another
TensorRT and driver, so it rebuilds the engines instead of loading ones that break. A build happens
in a private temporary directory that is renamed into place only when complete: a crash mid-build
leaves no half-built engine and never touches the running one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from device.engine.jetson import release as jetson
from device.engine.runtimes.base import Engine, EngineError, Runtime
from shared.protocol import Precision

log = logging.getLogger(__name__)


def cache_key(runtime: Runtime, onnx_sha256: str, precision: Precision) -> dict[str, Any]:
    return {
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "runtime": runtime.name,
        "runtime_version": runtime.version(),
        "accelerator": runtime.accelerator(),
        "options": runtime.build_options(),
        "l4t_release": jetson.l4t_release(),  # None off a Jetson
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


class EngineCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".build-*"):  # left by a crash mid-build
            log.warning("removing incomplete engine build %s", stale.name)
            shutil.rmtree(stale, ignore_errors=True)

    def lookup(self, digest: str) -> Engine | None:
        meta = self.root / digest / "engine.json"
        if not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text())
            engine = Engine(
                path=self.root / digest / data["file"],
                runtime=data["runtime"],
                precision=data["precision"],
                input_name=data["input_name"],
                input_shape=tuple(data["input_shape"]),
                max_batch=int(data["max_batch"]),
                build_s=float(data["build_s"]),
                info=data.get("info", {}),
            )
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring corrupt engine cache entry %s: %s", digest, e)
            return None
        return engine if engine.path.is_file() else None

    def get_or_build(
        self, runtime: Runtime, onnx_path: Path, onnx_sha256: str, precision: Precision
    ) -> tuple[Engine, bool]:
        """Return (engine, cache_hit)."""
        key = cache_key(runtime, onnx_sha256, precision)
        digest = key_digest(key)
        hit = self.lookup(digest)
        if hit is not None:
            log.info("engine cache hit %s (%s %s)", digest[:12], runtime.name, precision)
            return hit, True
        tmp = self.root / f".build-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            built = runtime.build(onnx_path, precision, tmp)
            record = {k: v for k, v in asdict(built).items() if k != "path"}
            record.update(file=built.path.name, key=key)
            (tmp / "engine.json").write_text(json.dumps(record, indent=2, default=str))
            final = self.root / digest
            if final.exists():  # a concurrent build won; keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        engine = self.lookup(digest)
        if engine is None:
            raise EngineError(f"engine cache entry {digest} vanished right after the build")
        return engine, False

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
