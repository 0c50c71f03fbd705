from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from host.factory import checkpoint, models
from host.factory.train import CropFlip, TrainConfig, fit, train_command
from shared import datasets
from shared.errors import EdgeloopError
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
    from host.factory.train import Hooks

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


def test_swa_schedule_anneals_to_swa_lr_then_holds() -> None:
    from host.factory.train.schedule import lr_lambda

    cfg = TrainConfig(epochs=10, lr=0.1, warmup_epochs=1, swa_start=6, swa_lr=0.01)
    f = lr_lambda(cfg, steps_per_epoch=10)
    assert f(9) == 1.0  # end of warm-up: peak
    assert 0.1 < f(30) < 1.0  # annealing
    assert all(abs(f(s) - 0.1) < 1e-12 for s in range(60, 100))  # swa_lr / lr, held
    with pytest.raises(ValueError, match="swa_start"):
        TrainConfig(epochs=5, swa_start=5)
    with pytest.raises(ValueError, match="cosine"):
        TrainConfig(epochs=5, swa_start=2, schedule="onecycle")


def test_swa_result_is_the_average_of_the_averaged_epochs(golden_dir: Path) -> None:
    from host.factory.train import Hooks

    data = datasets.load_labelled(golden_dir, limit=50)
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.05, warmup_epochs=0, bf16=False, swa_start=1, swa_lr=0.02)
    snapshots: list[torch.Tensor] = []

    def snap(model: torch.nn.Module) -> None:  # one step per epoch: after_step sees each epoch's end
        snapshots.append(dict(model.named_parameters())["fc.weight"].detach().clone())

    torch.manual_seed(0)
    m = models.build("resnet20")
    hist = fit(m, data, cfg, Preprocessing(), hooks=Hooks(after_step=snap))
    assert [h.get("swa_averaged") for h in hist] == [None, 1, 2, 3]
    final = dict(m.named_parameters())["fc.weight"]
    torch.testing.assert_close(final, torch.stack(snapshots[1:]).mean(0))
    assert not torch.equal(final, snapshots[-1])
    # BatchNorm statistics were recomputed for the averaged weights (not left at the last epoch's)
    assert int(m.state_dict()["bn1.num_batches_tracked"]) == 1  # one pass of one batch


def test_train_with_teacher_distils_and_records_it(golden_dir: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "t.pt"
    cfg = TrainConfig(epochs=1, batch_size=50, bf16=False)
    train_command("resnet20", str(golden_dir), teacher, cfg, val_data=str(golden_dir), work_dir=tmp_path / "w1")
    info = train_command("resnet20", str(golden_dir), tmp_path / "s.pt", cfg, work_dir=tmp_path / "w2",
                         teacher=teacher, kd_temperature=3.0, kd_alpha=0.5)  # fmt: skip
    kd = info["stages"][-1]["distillation"]
    assert kd["teacher"] == str(teacher) and kd["temperature"] == 3.0 and kd["alpha"] == 0.5
    assert kd["teacher_arch"] == "resnet20" and 0 <= kd["teacher_top1"] <= 1


def test_teacher_over_other_classes_is_refused(golden_dir: Path, tmp_path: Path) -> None:
    ckpt = checkpoint.load(Path(__file__).resolve().parents[3] / "host" / "zoo" / "resnet20.pt")
    other = tmp_path / "other.pt"
    bad = checkpoint.Checkpoint("resnet20", tuple(reversed(ckpt.classes)), ckpt.preprocessing, ckpt.state_dict)
    checkpoint.save(bad, other)
    with pytest.raises(EdgeloopError, match="other classes"):
        train_command("resnet20", str(golden_dir), tmp_path / "s.pt", TrainConfig(epochs=1), teacher=other)


@pytest.mark.parametrize(
    ("isa", "expected"), [(["avx512f", "avx512_bf16"], False), (["avx512_bf16", "amx_bf16"], True)]
)
def test_bf16_defaults_on_only_with_amx(monkeypatch: pytest.MonkeyPatch, isa: list[str], expected: bool) -> None:
    from device.engine import sysinfo
    from host.factory import train

    monkeypatch.setattr(sysinfo, "machine", lambda: {"isa": isa})
    train.fast_bf16.cache_clear()
    try:
        assert TrainConfig().bf16 is expected
        assert TrainConfig(bf16=not expected).bf16 is (not expected)  # an explicit choice wins
    finally:
        train.fast_bf16.cache_clear()
