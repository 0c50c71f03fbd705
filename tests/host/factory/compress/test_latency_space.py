"""The latency search space: moves, widths, block removal, and the pruned models it builds
(forward pass, MACs, checkpoint round trip, verified ONNX export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from host.factory import checkpoint, models
from host.factory.compress.latency.space import Arch, ResNetSpace, block_importance
from host.factory.export import export_verified
from host.factory.fold import fold_bn
from host.factory.models.resnet import BasicBlock, CifarResNet
from host.factory.ort import ort_logits
from host.factory.predict import predict_torch
from host.factory.stats import count_macs
from shared import datasets
from shared.datasets import CIFAR10_CLASSES
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.modelmeta import ModelMeta, read_meta


@pytest.fixture(scope="module")
def tiny_space(tiny_ckpt: Path) -> ResNetSpace:
    return ResNetSpace(checkpoint.load(tiny_ckpt).build(), "bn_scale")


def test_moves_of_the_full_model(tiny_space: ResNetSpace) -> None:
    names = [m.name for m in tiny_space.moves(tiny_space.start())]
    assert names[:3] == ["shrink 32x32", "shrink 16x16", "shrink 8x8"]
    drops = names[3:]
    assert len(drops) == 3 and [d.split(".")[0] for d in drops] == ["drop layer1", "drop layer2", "drop layer3"]
    assert all(not d.endswith("layer2.0") and not d.endswith("layer3.0") for d in drops)  # downsampling blocks stay


def test_widths_follow_round_to_and_the_layer_cap(tiny_space: ResNetSpace) -> None:
    w = tiny_space.width_after
    assert [w(64, k) for k in range(8)] == [64, 56, 48, 40, 32, 24, 16, 16]  # at most 75% of 64 goes
    assert [w(16, k) for k in range(3)] == [16, 8, 8]
    assert w(24, 1) == 16 and w(20, 1) == 8  # a width off the grid lands on it
    deepest = Arch(shrink=(1, 3, 6), dropped=(3, 2, 2))
    assert tiny_space.short(deepest) == "8x0 8x1 16x1"
    assert tiny_space.moves(deepest) == []


def test_blocks_go_least_important_first() -> None:
    model = models.build("resnet20")
    assert isinstance(model, CifarResNet)
    for i, scale in enumerate((0.9, 0.1, 0.5)):
        block = model.layer1[i]
        assert isinstance(block, BasicBlock)
        nn.init.constant_(block.bn2.weight, scale)
    space = ResNetSpace(model, "bn_scale")
    assert [m.name for m in space.moves(space.start()) if "layer1" in m.name] == ["drop layer1.1"]
    second = Arch(dropped=(1, 0, 0))
    assert [m.name for m in space.moves(second) if "layer1" in m.name] == ["drop layer1.2"]
    assert space.kept_blocks(Arch(dropped=(2, 0, 0)), 0) == [0]
    assert space.renamed(Arch(dropped=(1, 0, 0)), "layer1.2.conv1") == "layer1.1.conv1"
    assert space.renamed(Arch(dropped=(1, 0, 0)), "layer1.1.bn2") is None
    assert space.renamed(Arch(dropped=(1, 0, 0)), "conv1") == "conv1"
    block = model.layer1[0]
    assert isinstance(block, BasicBlock)
    assert block_importance(block, "bn_scale") == pytest.approx(0.9)
    assert block_importance(block, "l1") > 0


def test_only_cifar_resnets() -> None:
    with pytest.raises(EdgeloopError, match="CIFAR ResNets"):
        ResNetSpace(nn.Sequential(nn.Conv2d(3, 8, 3)), "l1")


@pytest.mark.parametrize(
    "arch",
    [Arch(dropped=(1, 1, 1)), Arch(shrink=(1, 1, 2), dropped=(3, 0, 1)), Arch(shrink=(0, 2, 0), dropped=(0, 2, 0))],
    ids=["one-block-each", "stage1-gone", "stage2-narrow-and-short"],
)
def test_built_models_match_their_description(tiny_space: ResNetSpace, arch: Arch) -> None:
    model = tiny_space.build(arch)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(model) == tiny_space.macs(arch)
    assert isinstance(model, CifarResNet)
    shapes = tiny_space.shapes(arch)
    assert model.arch_options() == {"blocks": [len(s.mids) for s in shapes]}
    assert model.conv1.out_channels == shapes[0].width
    for name, shape in zip(("layer1", "layer2", "layer3"), shapes, strict=True):
        blocks = list(getattr(model, name))
        assert [b.conv1.out_channels for b in blocks] == list(shape.mids)
        assert all(b.conv2.out_channels == shape.width for b in blocks)
    assert tiny_space.build(arch) is model  # cached by architecture
    assert count_macs(tiny_space.model) == tiny_space.macs(tiny_space.start())  # the source is never changed


def test_channels_go_lowest_ranked_first(tiny_ckpt: Path) -> None:
    model = checkpoint.load(tiny_ckpt).build()
    assert isinstance(model, CifarResNet)
    block = model.layer3[1]
    assert isinstance(block, BasicBlock)
    gammas = torch.linspace(1.0, 2.0, 64)
    gammas[[5, 17, 40, 63, 2, 9, 30, 50]] = 1e-3  # the eight least important inner channels
    block.bn1.weight.data.copy_(gammas)
    space = ResNetSpace(model, "bn_scale")
    pruned = space.build(Arch(shrink=(0, 0, 1)))
    bn = pruned.get_submodule("layer3.1.bn1")
    assert isinstance(bn, torch.nn.BatchNorm2d)
    kept_gammas = bn.weight.detach()
    assert len(kept_gammas) == 56 and bool((kept_gammas > 0.5).all())


def test_a_block_removed_model_round_trips_through_checkpoint_and_onnx(
    tiny_space: ResNetSpace, golden_dir: Path, tmp_path: Path
) -> None:
    arch = Arch(shrink=(1, 0, 1), dropped=(2, 1, 0))
    model = tiny_space.build(arch)
    ck = checkpoint.from_model(model, "resnet20", CIFAR10_CLASSES, Preprocessing(), {"top1": 0.1})
    assert ck.arch_options == {"blocks": [1, 2, 3]}
    path = checkpoint.save(ck, tmp_path / "latency.pt")
    rebuilt = checkpoint.load(path).build()
    images = datasets.load_labelled(str(golden_dir), limit=64).images
    prep = Preprocessing()
    want = predict_torch(model, images, prep)
    np.testing.assert_allclose(predict_torch(rebuilt, images, prep), want, atol=1e-5)
    onnx_path = tmp_path / "latency.onnx"
    meta = ModelMeta(CIFAR10_CLASSES, prep, "resnet20", "fp32", {})
    parity = export_verified(fold_bn(rebuilt), onnx_path, meta, reference=rebuilt, atol=1e-4)
    assert parity.top1_agreement == 1.0 and read_meta(onnx_path).arch == "resnet20"
    np.testing.assert_allclose(ort_logits(onnx_path, images, prep), want, atol=1e-4)


def test_checkpoints_without_arch_options_still_load(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint written before blocks per stage were stored builds the default network."""
    data = checkpoint.load(tiny_ckpt).to_dict()
    del data["arch_options"]
    torch.save(data, tmp_path / "old.pt")
    old = checkpoint.load(tmp_path / "old.pt")
    assert old.arch_options == {}
    model = old.build()
    assert isinstance(model, CifarResNet) and model.arch_options() == {"blocks": [3, 3, 3]}


def test_bad_blocks_are_refused(tiny_ckpt: Path) -> None:
    ck = checkpoint.load(tiny_ckpt)
    ck.arch_options = {"blocks": [3, 0, 3]}
    with pytest.raises(EdgeloopError, match=r"do not fit architecture 'resnet20'.*the first may be 0"):
        ck.build()
    ck.arch_options = {"width_multiplier": 2}
    with pytest.raises(EdgeloopError, match="do not fit architecture"):
        ck.build()
