"""``edgeloop compress``: run a recipe's steps on a checkpoint and write every product to --out.

Each step is a ``CompressionStep`` looked up in the registry of ``steps/`` by its ``type``. Every
step logs what it did and appends a record (what changed, top-1 on the validation set, MACs,
params, seconds) to ``<name>.compress.jsonl``; the final checkpoint's model card carries all records.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from host.factory import card, checkpoint
from host.factory.compress.context import Context
from host.factory.compress.recipe import Recipe
from host.factory.compress.steps.base import StepConfig, step_class
from host.factory.layout import contiguous
from host.factory.stats import count_macs, count_params
from shared import datasets

log = logging.getLogger(__name__)


def split_data(data: str, val_data: str | None) -> tuple[str, str | None]:
    """``--data ROOT`` holding train/ and test/ (a folder or a .tar.gz) means both splits."""
    path, sub = datasets.split_spec(data)
    if sub:
        return data, val_data
    if path.is_dir() and (path / "train").is_dir():
        return str(path / "train"), val_data or (str(path / "test") if (path / "test").is_dir() else None)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return f"{data}::train", val_data or f"{data}::test"
    return data, val_data


def compress(
    recipe: Recipe, recipe_text: str, ckpt_path: Path, data: str, out: Path, val_data: str | None = None
) -> dict[str, Any]:
    t_start = time.perf_counter()
    for step in recipe.steps:  # a step that cannot run here fails now, not after an hour of training
        step_class(step.type)().preflight(step)
    out.mkdir(parents=True, exist_ok=True)
    train_spec, val_spec = split_data(data, val_data)
    source = checkpoint.load(ckpt_path)
    ctx = Context(recipe.name, recipe.seed, source, source.build(), train_spec, val_spec, out)
    (out / f"{recipe.name}.recipe.toml").write_text(recipe_text)
    (out / f"{recipe.name}.compress.jsonl").unlink(missing_ok=True)
    (out / f"{recipe.name}.train.jsonl").unlink(missing_ok=True)
    source_top1 = ctx.evaluate()
    log.info("source %s: top-1 %s, %d MACs", ckpt_path.name, source_top1, count_macs(ctx.model, ctx.prep.size))
    for i, step in enumerate(recipe.steps, 1):
        _run_step(ctx, i, len(recipe.steps), step)
    model = contiguous(ctx.model).eval()
    summary: dict[str, Any] = {
        "name": recipe.name,
        "arch": source.arch,
        "parent": ckpt_path.name,
        "source_top1": source_top1,
        "metrics": {
            "top1": ctx.evaluate(model),
            "n_images": len(ctx.val) if ctx.val is not None else None,
            "dataset": val_spec,
        },
        "params": count_params(model),
        "params_nonzero": count_params(model, nonzero=True),
        "macs": count_macs(model, ctx.prep.size),
        "classes": list(source.classes),
        "preprocessing": source.preprocessing.to_dict(),
        "outputs": ctx.outputs,
        "steps": ctx.records,
        "recipe": recipe_text,
        "wall_time_s": round(time.perf_counter() - t_start, 1),
        "command": card.invocation(),
    }
    _write_card(ctx, recipe, model, summary, ckpt_path)
    return summary


def _run_step(ctx: Context, i: int, n: int, config: StepConfig) -> None:
    """Run step ``i`` of ``n``; its record goes to ``ctx.records`` and ``<name>.compress.jsonl``."""
    t0 = time.perf_counter()
    log.info("step %d/%d: %s", i, n, config.type)
    step = step_class(config.type)
    details = step().run(ctx, config)
    model = contiguous(ctx.model)
    record = {
        "step": i,
        "type": config.type,
        "seconds": round(time.perf_counter() - t0, 1),
        "top1": None if step.onnx_only() else ctx.evaluate(model),
        "macs": count_macs(model, ctx.prep.size),
        "params": count_params(model),
        "params_nonzero": count_params(model, nonzero=True),
        **details,
    }
    ctx.records.append(record)
    with (ctx.out / f"{ctx.name}.compress.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    log.info(
        "step %d %s done in %.0fs: top-1 %s, MACs %d", i, config.type, record["seconds"], record["top1"], record["macs"]
    )


def _write_card(ctx: Context, recipe: Recipe, model: nn.Module, summary: dict[str, Any], ckpt_path: Path) -> None:
    """A changed model is a new checkpoint with its card; otherwise the card of the run alone."""
    if ctx.trained or any(c.changes_model for c in recipe.step_classes()):
        source = ctx.source
        ck = checkpoint.from_model(
            model,
            source.arch,
            source.classes,
            source.preprocessing,
            summary["metrics"],
            {"parent": ckpt_path.name, "recipe": recipe.name},
        )
        checkpoint.save(ck, ctx.out / f"{recipe.name}.pt")
        summary["checkpoint"] = f"{recipe.name}.pt"
        card.write_card(ctx.out / f"{recipe.name}.json", summary)
    else:
        card.write_card(ctx.out / f"{recipe.name}.compress.json", summary)
