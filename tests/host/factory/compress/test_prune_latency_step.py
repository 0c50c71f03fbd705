"""``prune_latency`` inside ``edgeloop compress``: the measurement replaced by a latency model, the rest real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from host.factory import checkpoint
from host.factory.compress.latency.space import ResNetSpace
from host.factory.compress.pipeline import compress
from host.factory.compress.recipe import Recipe
from host.factory.compress.steps import prune_latency
from shared.compat import tomllib
from tests.host.factory.compress.latency_models import FakeMeter, int8_floor_at_32

RECIPE = """
name = "tiny-latency"
[[steps]]
type = "prune_latency"
criterion = "bn_scale"
runtime = "onnxruntime"
precision = "int8"
target_ms = 50.0
[[steps]]
type = "finetune"
epochs = 1
batch_size = 50
[[steps]]
type = "export"
[[steps]]
type = "ptq"
calibration_images = 32
flavours = ["onnxruntime"]
"""


@pytest.fixture
def fake_meter(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(
        space: ResNetSpace, timing: Any, meta: Any, images: Any, form: Any, target_ms: float, *rest: Any
    ) -> FakeMeter:
        return FakeMeter(space, int8_floor_at_32, target_ms)

    monkeypatch.setattr(prune_latency, "RuntimeMeter", make)


@pytest.mark.usefixtures("fake_meter")
def test_the_step_prunes_to_the_target_and_the_card_has_the_search(
    tiny_ckpt: Path, golden_dir: Path, tmp_path: Path
) -> None:
    recipe = Recipe.model_validate(tomllib.loads(RECIPE))
    out = tmp_path / "build"
    summary = compress(recipe, RECIPE, tiny_ckpt, str(golden_dir), out, val_data=str(golden_dir))
    card = json.loads((out / "tiny-latency.json").read_text())
    step = card["steps"][0]
    assert step["type"] == "prune_latency" and step["moves"][0].startswith("drop layer1.")
    assert step["measured_ms"] <= step["target_ms"] == 50.0
    assert [s["blocks"] for s in step["stages"]] == [1, 3, 3] and step["stages_before"][0]["blocks"] == 3
    assert step["measured_on"]["runtime"] == "onnxruntime" and step["measured_on"]["batch"] == 256
    assert step["measured_on"]["machine"]["isa"] is not None
    iterations = step["search"]["iterations"]
    assert len(iterations) == 3 and len(iterations[0]["candidates"]) == 6
    assert step["macs_after"] == card["macs"] < step["macs_before"]
    removed = [n for n, (_, after) in step["channels"].items() if after == 0]
    assert len(removed) == 4 and all(n.startswith("layer1.") for n in removed)  # two blocks, two convs each
    model = checkpoint.load(out / "tiny-latency.pt").build()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert checkpoint.load(out / "tiny-latency.pt").arch_options == {"blocks": [1, 3, 3]}
    assert summary["outputs"] == ["tiny-latency.onnx", "tiny-latency-int8.onnx"]
