from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from host import checkpoint, models
from host.train import CropFlip, TrainConfig, fit, train_command
from shared import datasets
from shared.imaging import Preprocessing


def test_crop_flip_is_a_shifted_window_of_the_padded_image() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    aug = CropFlip(imgs)
    out = aug(torch.arange(4), torch.Generator().manual_seed(0)).numpy()
    assert out.shape == (4, 32, 32, 3)
    padded = np.pad(imgs, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(4):
        found = any(
            np.array_equal(out[i], w)
            for dy in range(9)
            for dx in range(9)
            for w in (padded[i, dy : dy + 32, dx : dx + 32], padded[i, dy : dy + 32, dx : dx + 32][:, ::-1])
        )
        assert found


def test_fit_learns_and_resumes(golden_dir: Path, tmp_path: Path) -> None:
    data = datasets.load_labelled(golden_dir)
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.05, warmup_epochs=0)
    torch.manual_seed(0)
    a = models.build("resnet20")
    hist = fit(a, data, cfg, Preprocessing(), state_path=tmp_path / "s.pt", log_path=tmp_path / "log.jsonl")
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) for h in hist)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    # resuming a finished run trains nothing more and keeps the weights
    torch.manual_seed(1)
    b = models.build("resnet20")
    hist_b = fit(b, data, cfg, Preprocessing(), state_path=tmp_path / "s.pt", resume=True)
    assert hist_b == hist
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_resume_continues_where_it_stopped(golden_dir: Path, tmp_path: Path) -> None:
    from host.train import Hooks

    data = datasets.load_labelled(golden_dir, limit=100)
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.05, warmup_epochs=0, bf16=False)
    torch.manual_seed(0)
    straight = models.build("resnet20")
    fit(straight, data, cfg, Preprocessing())

    steps = {"n": 0}

    def crash_in_epoch_2(model: torch.nn.Module) -> None:
        steps["n"] += 1
        if steps["n"] == 3:  # 2 steps per epoch: this is the middle of epoch 2
            raise KeyboardInterrupt

    torch.manual_seed(0)
    crashed = models.build("resnet20")
    state = tmp_path / "s.pt"
    with contextlib.suppress(KeyboardInterrupt):
        fit(crashed, data, cfg, Preprocessing(), hooks=Hooks(after_step=crash_in_epoch_2), state_path=state)
    resumed = models.build("resnet20")
    fit(resumed, data, cfg, Preprocessing(), state_path=state, resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_train_command_writes_checkpoint_card_and_log(golden_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "zoo" / "m.pt"
    info = train_command(
        "resnet20",
        str(golden_dir),
        out,
        TrainConfig(epochs=1, batch_size=50),
        val_data=str(golden_dir),
        work_dir=tmp_path / "w",
    )
    card = json.loads(out.with_suffix(".json").read_text())
    for key in ("metrics", "params", "macs", "epochs", "wall_time_s", "command", "classes", "preprocessing"):
        assert key in card
    assert card["metrics"]["n_images"] == 200 and 0 <= card["metrics"]["top1"] <= 1
    assert card["params"] == info["params"] == 272474
    assert out.with_suffix(".train.jsonl").exists()
    assert checkpoint.load(out).classes == datasets.CIFAR10_CLASSES


def test_second_stage_from_init_records_both_stages(golden_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    cfg = TrainConfig(epochs=1, batch_size=50)
    train_command("resnet20", str(golden_dir), out, cfg, work_dir=tmp_path / "w1")
    first = checkpoint.load(out).state_dict["fc.bias"].clone()
    info = train_command("resnet20", str(golden_dir), out, cfg.model_copy(update={"lr": 0.01}), init=out,
                         work_dir=tmp_path / "w2")  # fmt: skip
    assert info["epochs"] == 2 and len(info["stages"]) == 2
    assert info["stages"][1]["config"]["lr"] == 0.01
    assert not torch.equal(first, checkpoint.load(out).state_dict["fc.bias"])  # it trained on from stage 1
