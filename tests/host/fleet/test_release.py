"""`edgeloop release create`: the manifest's drift reference (ModelInfo.reference)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from device.engine.reference import REFERENCE_KEY, reference_of
from host.fleet.release import ReleaseStore, create_release
from shared import signing
from shared.modelmeta import PREFIX, get_meta, read_meta, set_meta
from shared.protocol import DriftReference, ReleaseManifest
from tests.helpers import REPO

ZOO = REPO / "host" / "zoo"


def _flat(x: object) -> list[object]:
    """Every leaf of a model dump, in order: numbers to compare with a tolerance, the rest exactly."""
    if isinstance(x, dict):
        return [leaf for k in sorted(x) for leaf in [k, *_flat(x[k])]]
    if isinstance(x, list | tuple):
        return [leaf for v in x for leaf in _flat(v)]
    return [x]


def _same_reference(a: DriftReference, b: DriftReference) -> bool:
    """Equal up to float rounding: the zoo file's stored reference was measured on another CPU, and ONNX
    Runtime's kernels (AVX2, AVX-512) sum in different orders (seen: 1e-9 apart on an AVX2-only EPYC)."""
    fa, fb = _flat(a.model_dump()), _flat(b.model_dump())
    nums = [(u, v) for u, v in zip(fa, fb, strict=True) if isinstance(u, float)]
    rest = [(u, v) for u, v in zip(fa, fb, strict=True) if not isinstance(u, float)]
    return all(u == v for u, v in rest) and all(v == pytest.approx(u, rel=1e-6, abs=1e-9) for u, v in nums)


def _build(tmp_path: Path, *names: str) -> Path:
    build = tmp_path / "build"
    build.mkdir()
    for n in names:
        shutil.copy(ZOO / n, build / n)
    return build


def test_reference_is_measured_on_the_golden_images_by_default(tmp_path: Path) -> None:
    build = _build(tmp_path, "resnet20.onnx", "resnet20-int8.onnx")
    m = create_release(build, "r20", "1.0.0", ReleaseStore(tmp_path / "store"), source_top1=0.89)
    ref = m.model.reference
    assert ref is not None and _same_reference(ref, reference_of(build / "resnet20.onnx"))  # the FP32 file's
    assert ref.n_images == 200 and ref.source.startswith("golden images")
    assert len(ref.class_hist) == len(m.model.classes) and sum(ref.confidence_hist) == pytest.approx(1.0)
    stored = ReleaseManifest.model_validate_json((tmp_path / "store/releases/r20/1.0.0.json").read_text())
    assert stored.model.reference == ref


def test_reference_data_option_and_a_signed_manifest(tmp_path: Path, golden_dir: Path) -> None:
    """`--reference-data DIR` from the command line; the reference is part of what the signature covers."""
    held_out = tmp_path / "held-out"
    for cls in ("cat", "dog", "ship"):
        shutil.copytree(golden_dir / cls, held_out / cls)
    build = _build(tmp_path, "resnet20.onnx", "resnet20.json")
    signing.generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    done = subprocess.run(
        [sys.executable, "-m", "host.cli", "release", "create", str(build), "--name", "r20", "--version", "2.0.0",
         "--store", str(tmp_path / "store"), "--sign-key", str(tmp_path / "k.key"),
         "--reference-data", str(held_out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    m = ReleaseManifest.model_validate_json(done.stdout)
    assert m.model.reference is not None and m.model.reference.n_images == 60
    assert m.model.reference.source == "held-out (60 images)"
    signing.verify(m, [signing.load_public_key(tmp_path / "k.pub")])
    tampered = m.model_copy(update={"model": m.model.model_copy(update={"reference": None})})
    with pytest.raises(signing.SignatureError):
        signing.verify(tampered, [signing.load_public_key(tmp_path / "k.pub")])


def test_a_reference_in_the_onnx_metadata_is_used(tmp_path: Path) -> None:
    build = _build(tmp_path, "resnet20.onnx")
    own = reference_of(build / "resnet20.onnx").model_copy(update={"source": "export-time held-out set"})
    model = onnx.load(str(build / "resnet20.onnx"))
    meta = get_meta(model)
    meta.extra[REFERENCE_KEY] = own.model_dump_json()
    set_meta(model, meta)
    onnx.save(model, str(build / "resnet20.onnx"))
    assert any(p.key == PREFIX + REFERENCE_KEY for p in model.metadata_props)
    m = create_release(build, "r20", "1.0.0", ReleaseStore(tmp_path / "store"), source_top1=0.89)
    assert m.model.reference == own


def test_without_an_fp32_artifact_the_first_one_is_used_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build = _build(tmp_path, "resnet20-int8.onnx", "resnet20-fp16.onnx")
    with caplog.at_level(logging.INFO, logger="host.fleet.release"):
        m = create_release(build, "r20", "1.0.0", ReleaseStore(tmp_path / "store"), source_top1=0.89)
    assert m.model.reference is not None
    assert "no FP32 artifact: the drift reference comes from resnet20-fp16.onnx (fp16)" in caplog.text
    stored = read_meta(build / "resnet20-fp16.onnx").extra.get(REFERENCE_KEY)  # the zoo files carry their own
    expected = DriftReference.model_validate_json(stored) if stored else reference_of(build / "resnet20-fp16.onnx")
    assert m.model.reference == expected


def test_release_list_still_reads_old_manifests(tmp_path: Path) -> None:
    """Manifests written before drift references (no ``reference``) still load."""
    m = create_release(_build(tmp_path, "resnet20.onnx"), "r20", "1.0.0", ReleaseStore(tmp_path / "s"), source_top1=0.9)
    data = json.loads(m.model_dump_json())
    del data["model"]["reference"]
    assert ReleaseManifest.model_validate(data).model.reference is None


def test_a_stored_reference_without_input_statistics_is_measured_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file stamped before input statistics: its devices could only compare one class at a time with the
    whole reference (the false alarm of a one-scene camera), so `release create` measures it again."""
    build = _build(tmp_path, "resnet20.onnx")
    old = reference_of(build / "resnet20.onnx").model_copy(update={"inputs": None, "source": "stamped before"})
    model = onnx.load(str(build / "resnet20.onnx"))
    meta = get_meta(model)
    meta.extra[REFERENCE_KEY] = old.model_dump_json()
    set_meta(model, meta)
    onnx.save(model, str(build / "resnet20.onnx"))
    with caplog.at_level(logging.WARNING, logger="host.fleet.release"):
        m = create_release(build, "r20", "1.0.0", ReleaseStore(tmp_path / "store"), source_top1=0.89)
    assert m.model.reference is not None and m.model.reference.inputs is not None
    assert m.model.reference.source.startswith("golden images") and "has no input statistics" in caplog.text
