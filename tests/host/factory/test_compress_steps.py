"""The compression-step registry: one module per step type, looked up by the recipe and the pipeline."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from host.factory.compress.context import Context
from host.factory.compress.pipeline import compress
from host.factory.compress.recipe import Recipe, load_recipe
from host.factory.compress.steps import base
from host.factory.compress.steps.base import CompressionStep, StepConfig, register_step, step_class, step_types
from shared.errors import EdgeloopError

SHIPPED = [
    "export",
    "finetune",
    "fp16",
    "prune",
    "prune_latency",
    "ptq",
    "qat",
    "sparse24",
    "sparsity_train",
    "unstructured",
]


def test_every_shipped_step_is_registered_under_its_config_type() -> None:
    assert step_types() == SHIPPED
    for name in SHIPPED:
        cls = step_class(name)
        assert cls.type_name() == name
        assert typing.get_args(cls.config.model_fields["type"].annotation) == (name,)


@pytest.mark.parametrize("name", SHIPPED)
def test_step_configs_follow_one_pattern(name: str) -> None:
    """extra='forbid' and a description on every field (the Frigate pattern)."""
    config = step_class(name).config
    assert config.model_config.get("extra") == "forbid"
    undocumented = [f for f, info in config.model_fields.items() if not info.description]
    assert not undocumented, f"{config.__name__}: fields without a description: {undocumented}"


def test_unknown_step_type_names_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text('name = "x"\n[[steps]]\ntype = "explode"')
    with pytest.raises(EdgeloopError, match=r"steps\.0: unknown step type 'explode'; known step types: export, ") as e:
        load_recipe(tmp_path / "r.toml")
    assert all(t in str(e.value) for t in SHIPPED)
    with pytest.raises(EdgeloopError, match="unknown step type 'explode'"):
        step_class("explode")


def test_a_step_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_step(step_class("export"))


class ProbeConfig(StepConfig):
    """A step made only for this test."""

    type: Literal["probe"] = Field(description="test probe")
    note: str = Field("hello", description="copied into the step's record")


class ProbeStep(CompressionStep[ProbeConfig]):
    config = ProbeConfig
    changes_model = True

    def run(self, ctx: Context, config: ProbeConfig) -> dict[str, Any]:
        return {"note": config.note, "name": ctx.name}


@pytest.fixture
def probe_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_step(ProbeStep)


@pytest.mark.usefixtures("probe_registered")
def test_a_new_step_needs_only_its_class(tiny_ckpt: Path, golden_dir: Path, tmp_path: Path) -> None:
    """Registering the class is all: the recipe validates its table, its facts drive the order
    rules, and the pipeline runs it."""
    recipe = Recipe.model_validate({"name": "p", "steps": [{"type": "probe", "note": "hi"}]})
    assert isinstance(recipe.steps[0], ProbeConfig) and recipe.model_dump()["steps"][0] == {
        "type": "probe",
        "note": "hi",
    }
    with pytest.raises(ValueError, match="extra"):
        Recipe.model_validate({"name": "p", "steps": [{"type": "probe", "bogus": 1}]})
    with pytest.raises(ValueError, match=r"step 2 \(probe\) changes the model after 'export'"):
        Recipe.model_validate({"name": "p", "steps": [{"type": "export"}, {"type": "probe"}]})
    out = tmp_path / "build"
    summary = compress(recipe, "", tiny_ckpt, str(golden_dir), out, val_data=str(golden_dir))
    assert summary["steps"][0]["note"] == "hi" and summary["steps"][0]["name"] == "p"
    assert summary["checkpoint"] == "p.pt"  # a step that changes the model makes a new checkpoint
    record = json.loads((out / "p.compress.jsonl").read_text())
    assert record["type"] == "probe" and record["top1"] is not None
