"""Releases: ONNX artifacts + a signed manifest in a content-addressed artifact store.

Store layout (served as-is by ``edgeloop serve``)::

    STORE/artifacts/<sha256>.onnx          one file per distinct content
    STORE/releases/<name>/<version>.json   the signed manifest

Each ONNX file of the build directory becomes an artifact; its precision, runtime flavour and
sparsity come from the edgeloop metadata inside the file, and its golden-set top-1 is measured
here so that devices can self-test against it. The manifest's drift reference (``ModelInfo.reference``:
what held-out images look like to the release's FP32 model) comes from the FP32 file's
``edgeloop.drift_reference`` metadata when it has one, else it is measured here
(``device.engine.reference``), on ``--reference-data`` or the golden images.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from shared import signing
from shared.digest import sha256_file
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta, read_meta
from shared.protocol import (
    Artifact,
    DriftReference,
    ModelInfo,
    PreprocessingSpec,
    ReleaseManifest,
    check_id,
    utcnow,
    version_key,
)
from shared.protocol.releases import RuntimeName

log = logging.getLogger(__name__)


class ReleaseStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"
        self.releases = self.root / "releases"

    def add_artifact(self, path: Path) -> tuple[str, int]:
        digest = sha256_file(path)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        dest = self.artifacts / f"{digest}.onnx"
        if not dest.exists():
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        return digest, path.stat().st_size

    def manifest_path(self, name: str, version: str) -> Path:
        check_id(name, "release name")
        version_key(version)
        return self.releases / name / f"{version}.json"

    def save(self, manifest: ReleaseManifest, overwrite: bool = False) -> Path:
        path = self.manifest_path(manifest.name, manifest.version)
        if path.exists() and not overwrite:
            raise EdgeloopError(f"release {manifest.ref} already exists in {self.root}; bump the version")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(manifest.model_dump_json(indent=2))
        os.replace(tmp, path)
        return path

    def load(self, name: str, version: str) -> ReleaseManifest:
        path = self.manifest_path(name, version)
        if not path.is_file():
            raise EdgeloopError(f"release {name}@{version} not found in {self.root}")
        return ReleaseManifest.model_validate_json(path.read_text())

    def resolve(self, ref: str) -> ReleaseManifest:
        """``name@version`` or ``name`` (latest version)."""
        name, _, version = ref.partition("@")
        if not version:
            versions = self.versions(name)
            if not versions:
                raise EdgeloopError(f"no release named {name!r} in {self.root}")
            version = versions[-1]
        return self.load(name, version)

    def versions(self, name: str) -> list[str]:
        d = self.releases / check_id(name, "release name")
        return sorted((p.stem for p in d.glob("*.json")), key=version_key) if d.is_dir() else []

    def all(self) -> list[ReleaseManifest]:
        out: list[ReleaseManifest] = []
        if self.releases.is_dir():
            for d in sorted(self.releases.iterdir()):
                out.extend(self.load(d.name, v) for v in self.versions(d.name))
        return out


def golden_top1(onnx_path: Path, meta: ModelMeta) -> float | None:
    """Top-1 of one artifact on the golden set with ONNX Runtime, the device self-test's own measure
    (``device.engine.selftest.golden_top1``); None if ORT cannot run it."""
    from device.engine import selftest
    from device.engine.runtimes import open_onnx
    from device.engine.runtimes.base import EngineError

    try:
        # fp32 whatever the file is: ORT runs a Q/DQ file as it is (the release's INT8 forms)
        with open_onnx("onnxruntime", onnx_path, "fp32") as rt:
            return selftest.golden_top1(rt, meta.classes, meta.preprocessing)
    except EngineError as e:
        log.warning("cannot measure golden top-1 of %s on onnxruntime: %s", onnx_path.name, e)
        return None


def card_for(build_dir: Path, onnx_path: Path) -> dict[str, Any]:
    """The model card of an ONNX file: same stem, or the stem without precision suffixes."""
    stem = onnx_path.stem
    candidates = [stem]
    candidates += [stem[: -len(s)] for s in ("-int8-trt", "-int8-ort", "-int8", "-fp16", "-trt") if stem.endswith(s)]
    for c in candidates:
        card = build_dir / f"{c}.json"
        if card.is_file():
            data: dict[str, Any] = json.loads(card.read_text())
            return data
    return {}


def _read_metas(files: list[Path]) -> dict[Path, ModelMeta]:
    """The edgeloop metadata of every file; all of them must agree on classes and preprocessing."""
    metas = {f: read_meta(f) for f in files}
    first = metas[files[0]]
    for f, m in metas.items():
        if m.classes != first.classes or m.preprocessing != first.preprocessing:
            raise EdgeloopError(f"{f.name} has other classes or preprocessing than {files[0].name}")
    return metas


def _artifacts(files: list[Path], metas: dict[Path, ModelMeta]) -> tuple[Artifact, ...]:
    """Each file as an artifact of the store (``ReleaseStore.add_artifact`` copies it there once the release is
    accepted); a release holds one artifact per (precision, runtime)."""
    artifacts = []
    seen: set[tuple[str, str]] = set()
    for f in files:
        meta = metas[f]
        runtime = meta.extra.get("runtime", "any")
        if (meta.precision, runtime) in seen:
            raise EdgeloopError(f"two artifacts for {meta.precision}/{runtime}; a release holds one of each")
        seen.add((meta.precision, runtime))
        digest, size = sha256_file(f), f.stat().st_size
        artifacts.append(
            Artifact(
                name=f.name,
                url=f"artifacts/{digest}.onnx",
                sha256=digest,
                size=size,
                precision=meta.precision,
                runtime=runtime,
                sparsity=meta.extra.get("sparsity", "dense"),
                calibration=meta.extra.get("calibration", "none"),
                golden_top1=golden_top1(f, meta),
            )
        )
        log.info("artifact %s: %s %s, %d bytes, sha256 %s", f.name, meta.precision, runtime, size, digest[:12])
    return tuple(artifacts)


def drift_reference(files: list[Path], metas: dict[Path, ModelMeta], data: str | Path | None = None) -> DriftReference:
    """The drift reference of a release: its FP32 file's own (metadata), else measured on ``data``."""
    from device.engine.reference import REFERENCE_KEY, reference_of

    fp32 = [f for f in files if metas[f].precision == "fp32"]
    source = fp32[0] if fp32 else files[0]
    if not fp32:
        log.info("no FP32 artifact: the drift reference comes from %s (%s)", source.name, metas[source].precision)
    stored = metas[source].extra.get(REFERENCE_KEY)
    if stored and data is None:
        try:
            ref = DriftReference.model_validate_json(stored)
            log.info("drift reference from the metadata of %s (%s)", source.name, ref.source or "no source named")
            if ref.inputs is not None:
                return ref
            # without input statistics a device can only score input drift against the whole reference,
            # and a camera that serves one class at a time is then flagged (shared.drift)
            log.warning("the drift reference of %s has no input statistics (made before them): measured again "
                        "(edgeloop data reference %s stamps the file)", source.name, source.name)  # fmt: skip
        except ValueError as e:
            log.warning("ignoring the malformed drift reference in %s: %s", source.name, str(e)[:200])
    ref = reference_of(source, data)
    log.info("drift reference of %s measured on %s", source.name, ref.source)
    return ref


def _model_info(
    first: ModelMeta, card: dict[str, Any], source_top1: float | None, onnx_name: str, reference: DriftReference
) -> ModelInfo:
    metrics = card.get("metrics", {})
    src = source_top1 if source_top1 is not None else card.get("source_top1", metrics.get("top1"))
    if src is None:
        raise EdgeloopError(f"no model card with metrics.top1 next to {onnx_name}; pass --source-top1 (fraction 0..1)")
    return ModelInfo(
        arch=first.arch,
        classes=first.classes,
        input_shape=(3, first.preprocessing.size, first.preprocessing.size),
        preprocessing=PreprocessingSpec(
            mean=first.preprocessing.mean, std=first.preprocessing.std, size=first.preprocessing.size
        ),
        source_top1=float(src),
        params=card.get("params"),
        macs=card.get("macs"),
        reference=reference,
    )


def _ship_rule(
    artifacts: tuple[Artifact, ...],
    card: dict[str, Any],
    speed_report: str | Path | None,
    min_speedup: float,
    ship_slower: bool,
    notes: str,
) -> tuple[tuple[RuntimeName, ...] | None, str]:
    """The release's ``runtimes`` and its notes with the ship decision appended."""
    from host.fleet import ship

    if ship_slower:
        log.warning("--ship-slower: the ship rule is not applied; the release names no runtimes")
        return None, notes
    if speed_report is None:
        if card.get("parent"):  # a compressed model: nothing says it pays anywhere
            log.warning(
                "no --speed-report: %s ships to every runtime without proof that it is faster than its unpruned "
                "INT8 there (run `edgeloop report` and pass its JSON)",
                card.get("name", "the model"),
            )
        return None, notes
    decision = ship.decide(ship.load_report(speed_report), artifacts, min_speedup)
    log.info("%s", decision.describe())
    text = f"{notes}\n{decision.describe()}".strip()[:4096]
    runtimes = cast("tuple[RuntimeName, ...] | None", decision.runtimes)
    return runtimes, text


def create_release(
    build_dir: str | Path,
    name: str,
    version: str,
    store: ReleaseStore,
    sign_key: str | Path | None = None,
    include: list[str] | None = None,
    source_top1: float | None = None,
    notes: str = "",
    reference_data: str | Path | None = None,
    valid_days: float | None = 365.0,
    speed_report: str | Path | None = None,
    min_speedup: float = 1.0,
    ship_slower: bool = False,
) -> ReleaseManifest:
    """Package the ONNX files of ``build_dir`` (or just ``include``) as release ``name@version``.

    ``reference_data`` (held-out labelled images) is what the drift reference is measured on;
    without it the FP32 file's stored reference is used, or the golden images.
    ``speed_report`` (``edgeloop report``'s JSON) applies the ship rule (``host.fleet.ship``): the release
    names the runtimes where its INT8 file was measured faster than the unpruned INT8, and is refused
    where there are none unless ``ship_slower``.
    """
    build_dir = Path(build_dir)
    check_id(name, "release name")
    version_key(version)
    files = [build_dir / f for f in include] if include else sorted(build_dir.glob("*.onnx"))
    if not files:
        raise EdgeloopError(f"no .onnx files in {build_dir}")
    metas = _read_metas(files)
    artifacts = _artifacts(files, metas)
    card = card_for(build_dir, files[0])
    runtimes, notes = _ship_rule(artifacts, card, speed_report, min_speedup, ship_slower, notes)
    for f, a in zip(files, artifacts, strict=True):  # refused releases leave nothing in the store
        if store.add_artifact(f)[0] != a.sha256:
            raise EdgeloopError(f"{f} changed while the release was made; make it again")
    reference = drift_reference(files, metas, reference_data)
    model = _model_info(metas[files[0]], card, source_top1, files[0].name, reference)
    recipe_file = build_dir / "recipe.toml"
    created = utcnow()
    manifest = ReleaseManifest(
        name=name,
        version=version,
        created_at=created,
        not_after=created + timedelta(days=valid_days) if valid_days is not None else None,
        notes=notes,
        model=model,
        artifacts=artifacts,
        recipe=recipe_file.read_text() if recipe_file.is_file() else card.get("recipe"),
        runtimes=runtimes,
    )
    if sign_key is not None:
        manifest = signing.sign(manifest, signing.load_private_key(sign_key))
    store.save(manifest)
    return manifest
