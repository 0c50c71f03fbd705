"""The ship rule (``host.fleet.ship``): a compressed model ships only where it was measured faster than its
unpruned INT8, and ``release create --speed-report`` writes that into the signed manifest."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from host.fleet import ship
from host.fleet.release import ReleaseStore, create_release
from shared import signing
from shared.digest import sha256_file
from shared.errors import EdgeloopError
from shared.protocol import Artifact, ReleaseManifest
from tests.helpers import REPO
from tests.shared.factories import manifest

ZOO = REPO / "host" / "zoo"
SLIM = "resnet20-slim-int8.onnx"


def _artifact(name: str = SLIM, sha: str = "c" * 64) -> Artifact:
    return Artifact(name=name, url=f"artifacts/{name}", sha256=sha, size=1, precision="int8", runtime="onnxruntime")


def _row(file: str, runtime: str, speedup: float | None, sha: str | None = "c" * 64) -> dict[str, Any]:
    row: dict[str, Any] = {"file": file, "runtime": runtime, "speedup_vs_unpruned_int8": speedup}
    if sha is not None:
        row["sha256"] = sha
    return row


def _report(*rows: dict[str, Any]) -> dict[str, Any]:
    machine = {"cpu": "AMD EPYC", "isa": ["avx2"]}
    return {"baseline": "resnet20.onnx", "machine": machine, "variants": list(rows)}


def test_a_variant_ships_only_to_the_runtimes_where_it_is_faster() -> None:
    report = _report(_row(SLIM, "openvino", 1.65), _row(SLIM, "onnxruntime", 0.93))
    d = ship.decide(report, [_artifact()])
    assert d.runtimes == ("openvino",)
    assert [(v.runtime, v.ships) for v in d.verdicts] == [("onnxruntime", False), ("openvino", True)]
    text = d.describe()
    assert "AMD EPYC (avx2)" in text and f"openvino: {SLIM} 1.65x" in text and f"onnxruntime: {SLIM} 0.93x" in text


def test_min_speedup_raises_the_bar_and_a_variant_that_pays_nowhere_is_refused() -> None:
    report = _report(_row(SLIM, "openvino", 1.65), _row(SLIM, "onnxruntime", 1.14))
    assert ship.decide(report, [_artifact()]).runtimes == ("onnxruntime", "openvino")
    assert ship.decide(report, [_artifact()], min_speedup=1.3).runtimes == ("openvino",)
    with pytest.raises(EdgeloopError, match=r"not shipped: .* at least 2\.00x .*--ship-slower"):
        ship.decide(report, [_artifact()], min_speedup=2.0)
    with pytest.raises(EdgeloopError, match="never pays"):
        ship.decide(report, [_artifact()], min_speedup=0.9)


def test_a_runtime_without_the_unpruned_int8_measured_does_not_ship() -> None:
    report = _report(_row(SLIM, "openvino", None), _row(SLIM, "onnxruntime", 1.2))
    d = ship.decide(report, [_artifact()])
    assert d.runtimes == ("onnxruntime",) and f"openvino: {SLIM} not compared" in d.describe()


def test_the_unpruned_model_is_not_restricted() -> None:
    report = _report(_row("resnet20-int8.onnx", "onnxruntime", None))
    assert ship.decide(report, [_artifact("resnet20-int8.onnx")]).runtimes is None


def test_the_report_must_be_about_this_very_file() -> None:
    other = _report(_row(SLIM, "openvino", 1.65, sha="d" * 64))
    with pytest.raises(EdgeloopError, match=r"different resnet20-slim-int8\.onnx"):
        ship.decide(other, [_artifact()])
    with pytest.raises(EdgeloopError, match=r"no row for resnet20-slim-int8\.onnx"):
        ship.decide(_report(_row("x-int8.onnx", "openvino", 1.65, sha="f" * 64)), [_artifact()])
    fp32 = Artifact(name="m.onnx", url="artifacts/m.onnx", sha256="e" * 64, size=1, precision="fp32")
    with pytest.raises(EdgeloopError, match="has none"):
        ship.decide(other, [fp32])


def test_each_runtime_is_judged_on_the_file_its_devices_run() -> None:
    """The TensorRT-form file is timed on ONNX Runtime too (edgeloop report times every file everywhere), but an
    ONNX Runtime device runs the ONNX Runtime form: only that file's row counts there."""
    trt = Artifact(name="resnet20-slim-int8-trt.onnx", url="a/t", sha256="9" * 64, size=1, precision="int8",
                   runtime="tensorrt")  # fmt: skip
    report = _report(
        _row(SLIM, "onnxruntime", 0.95),
        _row(trt.name, "onnxruntime", 1.40, sha=trt.sha256),
        _row(SLIM, "openvino", 1.65),
        _row(trt.name, "openvino", 1.20, sha=trt.sha256),
    )
    d = ship.decide(report, [trt, _artifact()])
    assert d.runtimes == ("openvino",)
    judged = [(v.runtime, v.file, v.speedup) for v in d.verdicts]
    assert judged == [("onnxruntime", SLIM, 0.95), ("openvino", SLIM, 1.65)]
    int8_trt = _row("resnet20-int8-trt.onnx", "onnxruntime", 1.0)
    unpruned = _report(_row("resnet20-int8.onnx", "onnxruntime", None), int8_trt)
    assert ship.decide(unpruned, [_artifact("resnet20-int8.onnx")]).runtimes is None


def test_a_report_without_runtimes_is_refused_not_read_as_slow() -> None:
    old = {"baseline": "resnet20.onnx", "variants": [{"file": SLIM, "top1": 0.88, "throughput_ips": 3000.0}]}
    with pytest.raises(EdgeloopError, match="no runtime per row"):
        ship.decide(old, [_artifact()])


def test_an_old_report_without_digests_matches_by_name_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="host.fleet.ship"):
        d = ship.decide(_report(_row(SLIM, "openvino", 1.5, sha=None)), [_artifact()])
    assert d.runtimes == ("openvino",) and "matched by file name only" in caplog.text


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "not found"), ("{", "not readable JSON"), ('{"variants": 3}', "not an `edgeloop report`")],
)
def test_a_bad_report_file_is_a_clear_error(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EdgeloopError, match=match):
        ship.load_report(path)


def _slim_build(tmp_path: Path) -> Path:
    build = tmp_path / "build"
    build.mkdir()
    for name in ("resnet20-slim.onnx", SLIM, "resnet20-slim.json"):
        shutil.copy(ZOO / name, build / name)
    return build


def test_release_create_signs_the_runtimes_of_the_speed_report(tmp_path: Path) -> None:
    build = _slim_build(tmp_path)
    sha = sha256_file(build / SLIM)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(_row(SLIM, "openvino", 1.65, sha), _row(SLIM, "onnxruntime", 0.9, sha))))
    signing.generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    public = signing.load_public_key(tmp_path / "key.pub")
    store = ReleaseStore(tmp_path / "s")
    m = create_release(build, "slim", "1.0.0", store, sign_key=tmp_path / "key.pem", speed_report=report)
    assert m.runtimes == ("openvino",) and "ship rule (measured on AMD EPYC (avx2))" in m.notes
    assert store.load("slim", "1.0.0").runtimes == ("openvino",)
    signing.verify(m, [public])
    with pytest.raises(EdgeloopError):  # the runtimes are signed: widening them breaks the signature
        signing.verify(m.model_copy(update={"runtimes": ("openvino", "onnxruntime")}), [public])
    report.write_text(json.dumps(_report(_row(SLIM, "onnxruntime", 0.9, sha))))
    stored = set((tmp_path / "s" / "artifacts").iterdir())
    with pytest.raises(EdgeloopError, match="not shipped"):
        create_release(build, "slim", "1.0.1", ReleaseStore(tmp_path / "refused"), speed_report=report)
    assert not (tmp_path / "refused").exists()  # a refused release leaves nothing in the store
    assert set((tmp_path / "s" / "artifacts").iterdir()) == stored
    forced = create_release(build, "slim", "1.0.1", store, speed_report=report, ship_slower=True)
    assert forced.runtimes is None


def test_a_compressed_model_without_a_speed_report_ships_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="host.fleet.release"):
        m = create_release(_slim_build(tmp_path), "slim", "1.0.0", ReleaseStore(tmp_path / "s"))
    assert m.runtimes is None and "no --speed-report" in caplog.text


def test_a_manifest_without_runtimes_is_the_json_an_older_agent_reads_and_verifies(tmp_path: Path) -> None:
    """``runtimes`` is left out while unset: the bytes an older agent parses (extra="forbid") and the canonical
    bytes an older host signed are unchanged; set, it is in both."""
    signing.generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    key, public = signing.load_private_key(tmp_path / "key.pem"), signing.load_public_key(tmp_path / "key.pub")
    plain = manifest()
    assert "runtimes" not in json.loads(plain.model_dump_json()) and b"runtimes" not in signing.canonical_bytes(plain)
    signed = signing.sign(plain, key)
    reread = ReleaseManifest.model_validate_json(signed.model_dump_json())
    assert reread.runtimes is None and signing.verify(reread, [public])
    restricted = signing.sign(manifest(runtimes=("openvino",)), key)
    assert json.loads(restricted.model_dump_json())["runtimes"] == ["openvino"]
    assert ReleaseManifest.model_validate_json(restricted.model_dump_json()) == restricted
