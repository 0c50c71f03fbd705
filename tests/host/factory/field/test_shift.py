from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.factory.field import degrade
from host.factory.field.presets import PRESET_NAMES
from host.factory.field.shift import PRESETS, shift_dataset, shift_images
from shared import datasets
from shared.errors import EdgeloopError
from tests.helpers import REPO


def test_the_cli_choices_are_the_presets() -> None:
    assert tuple(PRESETS) == PRESET_NAMES


def test_each_degradation_does_what_it_says() -> None:
    rng = np.random.default_rng(0)
    img = np.full((16, 16, 3), 128, dtype=np.uint8)
    img[4:12, 4:12] = 220
    assert degrade.exposure(img, 0.5).mean() < img.mean() / 1.8
    assert degrade.exposure(img, 1.5).mean() > img.mean()
    cast = degrade.colour_cast(img, (1.0, 1.0, 0.5))
    assert cast[..., 2].mean() < cast[..., 0].mean()
    assert degrade.haze(img, 0.5).std() < img.std()
    assert degrade.blur(img, 1.0).std() < img.std()
    assert np.abs(degrade.noise(img, 10, rng).astype(int) - img).mean() > 5
    assert degrade.jpeg(img, 30).shape == img.shape


def test_a_copy_is_seeded_and_keeps_the_labels(tmp_path: Path, golden_dir: Path) -> None:
    a = shift_dataset(golden_dir, tmp_path / "a", "night", seed=3)
    shift_dataset(golden_dir, tmp_path / "b", "night", seed=3)
    shift_dataset(golden_dir, tmp_path / "c", "night", seed=4)
    files = sorted((tmp_path / "a").rglob("*.png"))
    assert a["images"] == len(files) == len(datasets.list_samples(golden_dir))
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in sorted((tmp_path / "b").rglob("*.png"))]
    assert [f.read_bytes() for f in files] != [f.read_bytes() for f in sorted((tmp_path / "c").rglob("*.png"))]
    assert datasets.class_names(datasets.list_samples(tmp_path / "a")) == datasets.class_names(
        datasets.list_samples(golden_dir)
    )
    with pytest.raises(EdgeloopError, match="not empty"):
        shift_dataset(golden_dir, tmp_path / "a", "night")
    with pytest.raises(EdgeloopError, match="unknown shift preset"):
        shift_images(np.zeros((1, 8, 8, 3), np.uint8), "rain")


def test_data_shift_command(tmp_path: Path, golden_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "host.cli", "data", "shift", str(golden_dir), "--out", str(tmp_path / "s"),
         "--preset", "dusk", "--seed", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    record = json.loads(out.stdout)
    assert record["preset"] == "dusk" and record["seed"] == 1
    assert json.loads((tmp_path / "s" / "shift.json").read_text())["images"] == record["images"]
