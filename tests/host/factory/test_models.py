from __future__ import annotations

from pathlib import Path

import pytest
import torch

from host.factory import checkpoint, models
from host.factory.stats import count_macs, count_params
from shared.datasets import CIFAR10_CLASSES
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing


@pytest.mark.parametrize(("arch", "params_k"), [("resnet20", 272), ("resnet32", 467), ("resnet56", 856)])
def test_cifar_resnets(arch: str, params_k: int) -> None:
    m = models.build(arch).eval()
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert abs(count_params(m) / 1000 - params_k) < 15  # He et al.: 0.27M / 0.46M / 0.85M


def test_resnet20_macs() -> None:
    assert 40e6 < count_macs(models.build("resnet20")) < 42e6  # He et al.: ~41M


def test_unknown_arch_is_a_clear_error() -> None:
    with pytest.raises(EdgeloopError, match="resnet20"):
        models.build("vgg99")


def test_checkpoint_round_trip_is_not_a_pickled_module(tmp_path: Path) -> None:
    m = models.build("resnet20").eval()
    ck = checkpoint.from_model(m, "resnet20", CIFAR10_CLASSES, Preprocessing(), {"top1": 0.5})
    checkpoint.save(ck, tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)  # loads with no code execution
    assert raw["arch"] == "resnet20" and raw["classes"][0] == "airplane"
    back = checkpoint.load(tmp_path / "a.pt")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back.build()(x), m(x))


def test_pruned_shapes_are_rebuilt_from_the_state_dict(tmp_path: Path) -> None:
    from host.factory.compress.prune import prune_channels

    m = models.build("resnet20").eval()
    prune_channels(m, "l1", 0.3)
    ck = checkpoint.from_model(m, "resnet20", CIFAR10_CLASSES, Preprocessing())
    checkpoint.save(ck, tmp_path / "p.pt")
    rebuilt = checkpoint.load(tmp_path / "p.pt").build()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), m(x))


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(EdgeloopError, match="not found"):
        checkpoint.load(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(EdgeloopError, match="not a readable"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(EdgeloopError, match="not an edgeloop checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
