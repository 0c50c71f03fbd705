"""`edgeloop-agent bench --all`: the activation's selection, run locally on ONNX files.

What trtexec users do by hand (build each precision, time it, check it still classifies) is what the
agent does on every deploy (``device.activation.select``). This runs that same code on the files given:
they become the artifacts of a throw-away local release (each tagged by its ``edgeloop.runtime`` and
precision metadata, like ``edgeloop release create`` does), and a throw-away engine manager activates
it, so every runtime installed here x every precision the files carry is built, self-tested, verified
against the FP32 file (INT8), timed at the same batch, and the fastest verified one is named.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from device.activation import EngineManager
from device.activation.steps import DEVICE_URL
from device.config import AgentConfig
from device.engine import sysinfo
from device.engine.builder import EngineCache
from device.engine.runtimes.base import RuntimeConfig
from device.state import AgentState
from shared.digest import sha256_file
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta, read_meta
from shared.protocol import Artifact, ModelInfo, PreprocessingSpec, ReleaseManifest


def _artifacts(models: list[Path], metas: list[ModelMeta], state: AgentState) -> tuple[Artifact, ...]:
    """Each file filed in the local artifact store (as a device-made one is), one per runtime x precision."""
    seen: dict[tuple[str, str], Path] = {}
    out = []
    for path, meta in zip(models, metas, strict=True):
        runtime = meta.extra.get("runtime", "any")
        if (meta.precision, runtime) in seen:
            raise EdgeloopError(
                f"{path.name} and {seen[meta.precision, runtime].name} are both {meta.precision} for {runtime}: "
                "give one file per precision (the TensorRT INT8 form carries edgeloop.runtime = tensorrt)"
            )
        seen[meta.precision, runtime] = path
        digest = sha256_file(path)
        state.artifact_path(digest).write_bytes(path.read_bytes())
        out.append(
            Artifact.model_validate(
                {
                    "name": path.name[:128],
                    "url": DEVICE_URL + digest,
                    "sha256": digest,
                    "size": path.stat().st_size,
                    "precision": meta.precision,
                    "runtime": runtime,
                    "sparsity": meta.extra.get("sparsity", "dense"),
                }
            )
        )
    return tuple(out)


def _manifest(models: list[Path], state: AgentState) -> ReleaseManifest:
    metas = [read_meta(m) for m in models]
    first = metas[0]
    for path, meta in zip(models, metas, strict=True):
        if meta.classes != first.classes or meta.preprocessing != first.preprocessing:
            raise EdgeloopError(f"{path.name} has other classes or preprocessing than {models[0].name}")
    p = first.preprocessing
    info = ModelInfo(
        arch=first.arch[:64],
        classes=first.classes,
        input_shape=(3, p.size, p.size),
        preprocessing=PreprocessingSpec(mean=p.mean, std=p.std, size=p.size),
        source_top1=0.0,
    )
    return ReleaseManifest(name="bench", version="0.0.0", model=info, artifacts=_artifacts(models, metas, state))


def compare(
    models: list[Path],
    runtime: RuntimeConfig,
    batch: int,
    seconds: float,
    data: str | None,
    limit: int | None,
) -> dict[str, Any]:
    """Every runtime x precision of ``models``, timed and verified as an activation would; the winner."""
    if not models:
        raise EdgeloopError("bench --all needs at least one ONNX file")
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-all-") as tmp:
        config = AgentConfig.model_validate(
            {
                "device_id": "bench",
                "state_dir": Path(tmp) / "state",
                "require_signature": False,
                "runtime": runtime,
                "eval_dir": data,
                "selftest_min_top1": 0.0,  # the golden images are CIFAR-10's: no floor for other models
                "int8": {"images": limit or 500},
                "selection": {"batch": batch, "seconds": seconds, "budget_s": 3600, "calibrate": False},
            }
        )
        state = AgentState(config.state_dir)
        manager = EngineManager(config, state, EngineCache(config.state_dir / "engines"))
        try:
            act = manager.activate(_manifest(models, state), None)
        finally:
            manager.close()
    return {
        "machine": sysinfo.machine(),
        "batch": batch,
        "seconds_per_candidate": seconds,
        "verified_on": data or "golden images (shared/samples)",
        "selection_s": act.selection_s,
        "chosen": {"runtime": act.runtime_name, "precision": act.slot.precision, "artifact": act.slot.artifact},
        "candidates": [c.model_dump(mode="json") for c in act.candidates],
    }


def print_comparison(r: dict[str, Any]) -> None:
    m = r["machine"]
    isa = " ".join(m.get("isa", [])) or "no listed ISA extensions"
    print(f"bench --all on {m.get('cpu', '?')} ({isa}); batch {r['batch']}, verified on {r['verified_on']}")
    print(f"{'runtime':<12} {'precision':<9} {'img/s':>9} {'verified':>9} {'agree':>6} {'drop':>6}  artifact / note")
    for c in r["candidates"]:
        ips = f"{c['throughput_ips']:,.0f}" if c["throughput_ips"] else "-"
        verified = {True: "yes", False: "NO", None: "-"}[c["verified"]]
        agree = f"{100 * c['agreement']:.1f}" if c["agreement"] is not None else "-"
        drop = f"{c['drop_points']:+.2f}" if c["drop_points"] is not None else "-"
        mark = "*" if c["chosen"] else " "
        print(
            f"{mark}{c['runtime']:<11} {c['precision']:<9} {ips:>9} {verified:>9} {agree:>6} {drop:>6}  "
            f"{c['artifact']}: {c['note']}"
        )
    ch = r["chosen"]
    print(f"chosen: {ch['runtime']} {ch['precision']} ({ch['artifact']}); the selection took {r['selection_s']:.1f} s")
