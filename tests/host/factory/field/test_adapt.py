"""``edgeloop adapt``: the parts (draws, the loss's input, AdaBN, field samples) and the command end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from host.cli import main
from host.factory import checkpoint
from host.factory.field.adapt import AdaptSettings, FieldDraws, to_uint8, training_subset
from host.factory.field.adapt_bn import adabn
from host.factory.field.adapt_data import load_field_samples
from host.factory.field.degrade import Degradation
from host.factory.field.shift import shift_dataset
from host.factory.predict import predict_torch, to_input
from shared import datasets, imaging
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.modelmeta import read_meta
from tests.helpers import REPO


def test_draws_vary_around_the_estimate_and_spread_zero_is_the_estimate() -> None:
    centre = Degradation(cast=(0.9, 1.0, 1.1), gain=0.5, gamma=1.2, blur=0.5, noise=6.0, jpeg_quality=50)
    rng = np.random.default_rng(0)
    draws = [FieldDraws(centre).draw(rng) for _ in range(200)]
    gains = np.array([d.gain for d in draws])
    assert 0.42 < gains.min() < gains.max() < 0.59 and abs(gains.mean() - 0.5) < 0.02
    assert {d.jpeg_quality for d in draws} > {50} and all(d.blur >= 0 for d in draws)
    assert FieldDraws(centre, spread=0).draw(rng) == centre


def test_the_loss_sees_the_exact_pixels_the_loop_fed_it() -> None:
    prep = Preprocessing()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_input(torch.from_numpy(images), prep), prep), images)


def test_a_training_subset_is_balanced_and_seeded(golden_dir: Path) -> None:
    train = datasets.load_labelled(golden_dir)
    a, b = training_subset(train, 50, 1), training_subset(train, 50, 1)
    assert len(a) == 50 and np.array_equal(a.labels, b.labels) and np.array_equal(a.images, b.images)
    assert np.bincount(a.labels).min() >= 4
    assert training_subset(train, None, 0) is train


def test_adabn_moves_only_the_batchnorm_statistics(zoo_checkpoint: Path, golden_dir: Path) -> None:
    ck = checkpoint.load(zoo_checkpoint)
    model = ck.build()
    dark = (datasets.load_labelled(golden_dir).images // 3).astype(np.uint8)
    bn = adabn(model, dark, ck.preprocessing)
    before, after = model.state_dict(), bn.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)
    assert not bn.training and all(m.momentum is None for m in bn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not np.allclose(predict_torch(model, dark, ck.preprocessing), predict_torch(bn, dark, ck.preprocessing))


def _write(path: Path, img: np.ndarray) -> None:
    cv2 = imaging.opencv()
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def test_field_samples_are_any_folder_and_bad_ones_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(20):  # nested folders whose names are no labels, and a larger frame size
        _write(tmp_path / "ok" / f"cam{i % 3}" / "day" / f"{i}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    images = load_field_samples(tmp_path / "ok", 32)
    assert images.shape == (20, 32, 32, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeloopError, match="no images"):
        load_field_samples(tmp_path / "empty", 32)
    with pytest.raises(EdgeloopError, match="not a folder"):
        load_field_samples(tmp_path / "missing", 32)
    with pytest.raises(EdgeloopError, match="only 20 images"):
        load_field_samples(tmp_path / "ok", 32, min_images=21)
    bad = tmp_path / "bad"
    for i in range(20):
        _write(bad / f"{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(EdgeloopError, match=r"1 of 21 files .* not readable images \(broken.jpg"):
        load_field_samples(bad, 32)
    small = tmp_path / "small"
    for i in range(20):
        _write(small / f"{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    with pytest.raises(EdgeloopError, match="smaller than the model's 32x32 input"):
        load_field_samples(small, 32)


def _adapt(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host.cli", "adapt", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_adapt_end_to_end_writes_a_verified_onnx_and_its_checkpoint(
    tmp_path: Path, golden_dir: Path, zoo_checkpoint: Path
) -> None:
    shift_dataset(golden_dir, tmp_path / "field", "night", seed=2)  # labelled folders: adapt ignores them
    out = tmp_path / "out" / "adapted.onnx"
    small = ["--epochs", "1", "--images", "64", "--batch-size", "32", "--estimate-images", "32", "--json"]
    field = str(tmp_path / "field")
    r = _adapt([str(zoo_checkpoint), "--field-samples", field, "--data", str(golden_dir), "--out", str(out),
                "--val-data", str(golden_dir), "--field-val", field, *small])  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    d = report["estimate"]["degradation"]
    assert d["gain"] < 0.7 and d["jpeg_quality"] is not None  # night: dark, compressed
    assert report["onnx"] == str(out) and out.exists() and out.with_suffix(".pt").exists()
    meta = read_meta(out)
    assert meta.precision == "fp32" and meta.extra["adapted"] == "true" and meta.extra["bn_folded"] == "true"
    import onnx

    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type == "BatchNormalization"]
    assert report["parity"]["top1_agreement"] >= 0.999
    ck = checkpoint.load(out.with_suffix(".pt"))
    assert ck.arch == "resnet20" and ck.metrics["field_degradation"]["jpeg_quality"] == d["jpeg_quality"]
    acc = report["accuracy"]
    assert set(acc) == {"clean", "field"} and set(acc["clean"]) == {"n_images", "before", "adabn", "after"}
    assert acc["clean"]["before"] > 0.8  # the zoo model on the golden images
    assert set(report["seconds"]) >= {"estimate_s", "train_s", "export_s", "total_s"}
    assert report["settings"]["epochs"] == 1 and len(report["history"]) == 1


def test_adapt_refuses_bad_inputs_clearly(
    tmp_path: Path, golden_dir: Path, zoo_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    common = ["--data", str(golden_dir), "--out", str(tmp_path / "a.onnx")]
    cases = [
        ([str(zoo_checkpoint), "--field-samples", str(tmp_path / "empty"), *common], "--field-samples: no images"),
        ([str(zoo_checkpoint), "--field-samples", str(tmp_path / "nowhere"), *common], "is not a folder of images"),
        ([str(zoo_checkpoint), "--field-samples", str(golden_dir), "--data", str(golden_dir),
          "--out", str(tmp_path / "a.pt")], "expected an .onnx file name"),
        ([str(tmp_path / "nope.pt"), "--field-samples", str(golden_dir), *common], "checkpoint not found"),
    ]  # fmt: skip
    for args, message in cases:
        assert main(["adapt", *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()
    with pytest.raises(ValueError, match="images"):
        AdaptSettings(images=3)


def test_adapt_method_adabn_needs_no_training_set_and_helps_at_night(
    tmp_path: Path, golden_dir: Path, zoo_checkpoint: Path
) -> None:
    shift_dataset(golden_dir, tmp_path / "night", "night", seed=3)
    out = tmp_path / "out" / "adabn.onnx"
    night = str(tmp_path / "night")
    r = _adapt([str(zoo_checkpoint), "--method", "adabn", "--field-samples", night, "--out", str(out),
                "--field-val", night, "--val-data", str(golden_dir), "--json"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["method"] == "adabn" and report["adabn_weight"] == 0.5 and "train" not in report
    assert report["field_samples"]["n_images"] == 200 and report["checkpoint"] == str(out.with_suffix(".pt"))
    meta = read_meta(out)
    assert meta.extra["adapted"] == "adabn 0.5 on 200 images" and meta.extra["bn_folded"] == "true"
    assert report["parity"]["top1_agreement"] >= 0.999
    field = report["accuracy"]["field"]
    assert field["after"] > field["before"]  # the statistics of the night images it is scored on: a sanity check
    ck = checkpoint.load(out.with_suffix(".pt"))
    assert ck.metrics["field_images"] == 200 and ck.metrics["adabn_weight"] == 0.5


def test_adapt_methods_refuse_the_options_of_the_other(
    tmp_path: Path, golden_dir: Path, zoo_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [str(zoo_checkpoint), "--field-samples", str(golden_dir), "--out", str(tmp_path / "a.onnx")]
    assert main(["adapt", *base, "--method", "adabn", "--data", str(golden_dir), "--epochs", "2"]) == 2
    assert "--method adabn trains nothing: drop --data, --epochs" in capsys.readouterr().err
    assert main(["adapt", *base]) == 2
    assert "--data (the labelled training set) is needed to fine-tune" in capsys.readouterr().err
    assert main(["adapt", *base, "--data", str(golden_dir), "--adabn-weight", "0.7"]) == 2
    assert "--adabn-weight is for --method adabn" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()
