from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from device.engine.calibration import forms, quantize
from host.factory import checkpoint
from host.factory.compress import half, prune, qat, sparsity
from host.factory.compress.pipeline import compress, split_data
from host.factory.compress.recipe import Recipe, load_recipe
from host.factory.compress.recipes import builtin_recipes
from host.factory.export import export_command
from host.factory.fold import count_bn, fold_bn
from host.factory.ort import ort_logits
from host.factory.stats import count_macs, count_params
from host.factory.train.losses import distill_loss
from shared import datasets
from shared.compat import tomllib
from shared.errors import EdgeloopError
from shared.modelmeta import read_meta

# --- recipes -----------------------------------------------------------------------------------


def test_builtin_recipes_validate() -> None:
    names = builtin_recipes()
    assert {"resnet20-slim", "resnet20-int8", "resnet20-l1", "resnet20-unstructured", "resnet20-sparse24"} <= set(names)
    for path in names.values():
        load_recipe(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\n[[steps]]\ntype = "explode"', "steps.0"),
        ('name = "x"\n[[steps]]\ntype = "ptq"', "needs an earlier 'export'"),
        ('name = "x"\n[[steps]]\ntype = "export"\n[[steps]]\ntype = "finetune"', "after 'export'"),
        (
            'name = "x"\n[[steps]]\ntype = "prune"\ncriterion = "bn_scale"\ntarget_macs_reduction = 1.5',
            "target_macs_reduction",
        ),
        ('name = "x"\n[[steps]]\ntype = "finetune"\nepochs = 0', "epochs"),
        ('name = "x"\n[[steps]]\ntype = "finetune"\ncompare_without_distill = true', "distill"),
        ('name = "x"\n[[steps]]\ntype = "export"\nbogus = 1', "bogus"),
        ('name = "a/b"\n[[steps]]\ntype = "export"', "name"),
        ('name = "x"\nsteps = []', "steps"),
        ('name = "x"\n[[steps]]\ntype = "qat"\n[[steps]]\ntype = "export"', "qat"),
        ("name = [", "not valid TOML"),
    ],
)
def test_recipe_validation_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(EdgeloopError, match=message):
        load_recipe(tmp_path / "r.toml")


# --- pruning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("criterion", "round_to"), [("bn_scale", 8), ("l1", 8), ("bn_scale", 16)])
def test_channel_pruning_shrinks_and_rounds(tiny_ckpt: Path, criterion: str, round_to: int) -> None:
    model = checkpoint.load(tiny_ckpt).build()
    macs0, params0 = count_macs(model), count_params(model)
    rec = prune.prune_channels(model, criterion, 0.4, round_to=round_to)  # type: ignore[arg-type]
    assert count_macs(model) <= 0.6 * macs0 + 1 and count_params(model) < params0
    assert rec["macs_reduction"] >= 0.4
    for name, (before, after) in rec["channels"].items():
        assert after <= before
        assert after % round_to == 0 or after == before, name
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)  # residual adds still line up


def test_slimming_regularizer_adds_l1_subgradient(tiny_ckpt: Path) -> None:
    model = checkpoint.load(tiny_ckpt).build().train()
    hook = prune.slimming_regularizer(model, 1e-3)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    bn = model.bn1
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.weight.grad is not None
    before = bn.weight.grad.clone()
    hook(model)
    torch.testing.assert_close(bn.weight.grad - before, 1e-3 * torch.sign(bn.weight.detach()))
    with pytest.raises(EdgeloopError):
        prune.slimming_regularizer(model, 0.0)


# --- sparsity ----------------------------------------------------------------------------------


def test_2to4_mask_and_checker() -> None:
    w = torch.randn(8, 16, 3, 3)
    m = sparsity.mask_2to4(w)
    assert sparsity.is_2to4(w * m) and not sparsity.is_2to4(w)
    groups = (w * m).movedim(1, -1).reshape(-1, 4)
    kept = groups.abs().sort(-1).values[:, 2:]
    torch.testing.assert_close(kept, w.movedim(1, -1).reshape(-1, 4).abs().sort(-1).values[:, 2:])  # the 2 largest
    assert sparsity.is_2to4(torch.zeros(2, 4))
    assert not sparsity.is_2to4(torch.ones(2, 3))
    with pytest.raises(ValueError):
        sparsity.mask_2to4(torch.randn(4, 6))


def test_masks_hold_through_finetuning(tiny_ckpt: Path, golden_dir: Path) -> None:
    from host.factory.train import TrainConfig, fit
    from shared.imaging import Preprocessing

    data = datasets.load_labelled(golden_dir, limit=100)
    cfg = TrainConfig(epochs=1, batch_size=50, lr=0.05, warmup_epochs=0)
    m24 = checkpoint.load(tiny_ckpt).build()
    info = sparsity.apply_2to4(m24)
    assert "conv1" not in info["layers"]  # the stem has 3 input channels
    fit(m24, data, cfg, Preprocessing())
    sparsity.make_permanent(m24)
    assert all(sparsity.check_2to4(m24).values())
    mu = checkpoint.load(tiny_ckpt).build()
    sparsity.unstructured(mu, 0.6)
    fit(mu, data, cfg, Preprocessing())
    sparsity.make_permanent(mu)
    assert not any(hasattr(m, "weight_orig") for m in mu.modules())
    assert sparsity.zero_fraction(mu) == pytest.approx(0.6, abs=0.01)


# --- folding, quantization ---------------------------------------------------------------------


def test_bn_folding_parity(tiny_ckpt: Path, golden_dir: Path) -> None:
    from host.factory.predict import predict_torch

    ck = checkpoint.load(tiny_ckpt)
    model = ck.build()
    folded = fold_bn(model)
    assert count_bn(model) == 21 and count_bn(folded) == 0
    images = datasets.load_labelled(golden_dir).images
    diff = np.abs(predict_torch(model, images, ck.preprocessing) - predict_torch(folded, images, ck.preprocessing))
    assert diff.max() <= 1e-4


@pytest.fixture(scope="module")
def fp32_onnx(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("q") / "m.onnx"
    export_command(tiny_ckpt, out)
    return out


def _zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [
        inits[n.input[2]]
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits
    ]


def test_ptq_flavours(fp32_onnx: Path, golden_dir: Path, tmp_path: Path) -> None:
    images = datasets.load_labelled(golden_dir, limit=64).images
    trt, ort = tmp_path / "trt.onnx", tmp_path / "ort.onnx"
    rec = quantize.quantize(fp32_onnx, trt, images, forms.TENSORRT, "tensorrt", "minmax")
    edges = quantize.edge_nodes(onnx.load(str(fp32_onnx)))
    quantize.quantize(fp32_onnx, ort, images, forms.U8S8, "onnxruntime", "entropy", keep_float=edges)
    mt, mo = onnx.load(str(trt)), onnx.load(str(ort))
    assert quantize.count_qdq(mt)["QuantizeLinear"] > 10 and quantize.count_qdq(mt)["DequantizeLinear"] > 20
    assert quantize.qdq_is_symmetric_int8(mt)
    assert not quantize.qdq_is_symmetric_int8(mo)
    assert any(z.dtype == np.uint8 for z in _zero_points(mo))
    convs = [n for n in mo.graph.node if n.op_type == "Conv"]
    assert not any(i.endswith("_DequantizeLinear_Output") for i in convs[0].input[:1])  # first conv kept float
    assert rec["ranges"] and all(lo <= 0 <= hi for lo, hi in rec["ranges"].values())
    for path, runtime in ((trt, "tensorrt"), (ort, "onnxruntime")):
        meta = read_meta(path)
        assert meta.precision == "int8" and meta.extra["runtime"] == runtime
        logits = ort_logits(path, images, meta.preprocessing)
        ref = ort_logits(fp32_onnx, images, meta.preprocessing)
        assert (logits.argmax(1) == ref.argmax(1)).mean() > 0.5


def test_fp16_export(fp32_onnx: Path, golden_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.onnx"
    half.export_fp16(fp32_onnx, out)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    kinds = {t.data_type for t in m.graph.initializer if t.data_type in (1, 10)}
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    images = datasets.load_labelled(golden_dir, limit=20).images
    meta = read_meta(out)
    np.testing.assert_allclose(
        ort_logits(out, images, meta.preprocessing), ort_logits(fp32_onnx, images, meta.preprocessing), atol=0.05
    )


def test_qat_export_and_exact_u8_twin(tiny_ckpt: Path, golden_dir: Path, tmp_path: Path) -> None:
    from host.factory.export import export_verified
    from shared.modelmeta import ModelMeta

    ck = checkpoint.load(tiny_ckpt)
    images = datasets.load_labelled(golden_dir, limit=64).images
    qmodel, info = qat.prepare_qat(fold_bn(ck.build()), images, ck.preprocessing)
    assert info["layers"] == 22  # 21 convs + the classifier
    # one optimiser step of fake-quant training: every learnable input scale gets a gradient
    qmodel.train()
    before = qat.learned_ranges(qmodel)
    x = torch.randn(8, 3, 32, 32)
    loss = torch.nn.functional.cross_entropy(qmodel(x), torch.arange(8) % 10)
    loss.backward()
    scales = [m.scale for m in qmodel.modules() if isinstance(m, qat._QuantIO)]
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in scales)
    torch.optim.SGD(scales, lr=1e-3).step()
    assert qat.learned_ranges(qmodel) != before
    qmodel.eval()
    qat.set_exporting(qmodel, True)
    out = tmp_path / "qat-trt.onnx"
    export_verified(
        qmodel,
        out,
        ModelMeta(ck.classes, ck.preprocessing, precision="int8"),
        atol=0.2,
        min_agreement=0.8,
        dynamo=False,
    )
    m = onnx.load(str(out))
    assert quantize.count_qdq(m)["QuantizeLinear"] >= 22
    twin = onnx.load(str(out))
    assert qat.to_u8_activations(twin) > 0
    onnx.save(twin, str(tmp_path / "qat-u8.onnx"))
    a = ort_logits(out, images, ck.preprocessing)
    b = ort_logits(tmp_path / "qat-u8.onnx", images, ck.preprocessing)
    np.testing.assert_allclose(a, b, atol=1e-4)  # same grid, shifted zero point: same numbers


def test_distill_loss_is_zero_for_a_perfect_student(tiny_ckpt: Path) -> None:
    teacher = checkpoint.load(tiny_ckpt).build()
    student = checkpoint.load(tiny_ckpt).build().eval()
    loss, _ = distill_loss(teacher, temperature=4.0, alpha=1.0)(
        student, torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    )
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-5)


# --- the whole pipeline ------------------------------------------------------------------------


def test_pipeline_end_to_end_on_tiny_data(tiny_ckpt: Path, golden_dir: Path, tmp_path: Path) -> None:
    text = """
name = "tiny-slim"
[[steps]]
type = "sparsity_train"
epochs = 1
batch_size = 50
[[steps]]
type = "prune"
criterion = "bn_scale"
target_macs_reduction = 0.4
[[steps]]
type = "finetune"
epochs = 1
batch_size = 50
distill = {}
compare_without_distill = true
[[steps]]
type = "export"
[[steps]]
type = "ptq"
calibration_images = 32
[[steps]]
type = "fp16"
"""
    recipe = Recipe.model_validate(tomllib.loads(text))
    out = tmp_path / "build"
    summary = compress(recipe, text, tiny_ckpt, str(golden_dir), out, val_data=str(golden_dir))
    names = {p.name for p in out.iterdir()}
    assert {
        "tiny-slim.pt",
        "tiny-slim.json",
        "tiny-slim.onnx",
        "tiny-slim-int8.onnx",
        "tiny-slim-int8-trt.onnx",
        "tiny-slim-fp16.onnx",
        "tiny-slim.recipe.toml",
        "tiny-slim.compress.jsonl",
    } <= names
    card = json.loads((out / "tiny-slim.json").read_text())
    assert card["macs"] <= 0.6 * 41e6 and card["metrics"]["n_images"] == 200
    steps = [json.loads(line) for line in (out / "tiny-slim.compress.jsonl").read_text().splitlines()]
    assert [s["type"] for s in steps] == ["sparsity_train", "prune", "finetune", "export", "ptq", "fp16"]
    assert steps[3]["bn_nodes_in_onnx"] == 0 and steps[3]["parity_max_abs_diff"] <= 1e-4
    assert "top1_without_distill" in steps[2] and "top1_with_distill" in steps[2]
    assert checkpoint.load(out / "tiny-slim.pt").build()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert summary["outputs"] == [
        "tiny-slim.onnx",
        "tiny-slim-int8.onnx",
        "tiny-slim-int8-trt.onnx",
        "tiny-slim-fp16.onnx",
    ]


def test_split_data(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    assert split_data(str(tmp_path), None) == (str(tmp_path / "train"), str(tmp_path / "test"))
    assert split_data(f"{tmp_path}/a.tar.gz::train", "v") == (f"{tmp_path}/a.tar.gz::train", "v")
