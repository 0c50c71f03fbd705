"""``edgeloop compress``: run a recipe's steps on a checkpoint and write every product to --out.

Each step has one function in ``STEPS`` (an explicit registry). Every step logs what it did and
appends a record (what changed, top-1 on the validation set, MACs, params, seconds) to
``<name>.compress.jsonl``; the final checkpoint's model card carries all records.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from host.factory import card, checkpoint
from host.factory.checkpoint import Checkpoint
from host.factory.compress import prune, qat, quantize, sparsity
from host.factory.compress.distill import distill_loss
from host.factory.compress.fold import count_bn, fold_bn
from host.factory.compress.recipe import (
    FP16,
    PTQ,
    QAT,
    DistillSpec,
    Export,
    Finetune,
    Prune,
    Recipe,
    Sparse24,
    SparsityTrain,
    TrainKnobs,
    Unstructured,
)
from host.factory.evaluate import predict_torch, top1
from host.factory.export import export_verified
from host.factory.layout import channels_last, contiguous
from host.factory.stats import count_macs, count_params
from host.factory.train import Hooks, TrainConfig, fit, load_split
from shared import datasets
from shared.datasets import LabelledImages
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta

log = logging.getLogger(__name__)


@dataclass
class Context:
    recipe: Recipe
    source: Checkpoint
    model: nn.Module
    train_spec: str
    val_spec: str | None
    out: Path
    _train: LabelledImages | None = None
    _val: LabelledImages | None = None
    onnx_fp32: Path | None = None
    outputs: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    trained: bool = False

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def prep(self):  # type: ignore[no-untyped-def]
        return self.source.preprocessing

    @property
    def train(self) -> LabelledImages:
        if self._train is None:
            self._train = load_split(self.train_spec, self.source.classes, "train", self.prep.size)
        return self._train

    @property
    def val(self) -> LabelledImages | None:
        if self._val is None and self.val_spec:
            self._val = load_split(self.val_spec, self.source.classes, "val", self.prep.size)
        return self._val

    def teacher(self, spec: DistillSpec) -> nn.Module:
        ckpt = self.source if spec.teacher == "source" else checkpoint.load(spec.teacher)
        return channels_last(ckpt.build())

    def calibration_images(self, n: int):  # type: ignore[no-untyped-def]
        """A class-balanced slice of the training set (never the test set)."""
        idx = _balanced_indices(self.train.labels, n)
        return self.train.images[idx]

    def evaluate(self, model: nn.Module | None = None) -> float | None:
        if self.val is None:
            return None
        return top1(predict_torch(model or self.model, self.val.images, self.prep), self.val.labels)


def _balanced_indices(labels: Any, n: int) -> Any:
    import numpy as np

    per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    take: list[int] = []
    i = 0
    while len(take) < min(n, len(labels)):
        for idx in per_class:
            if i < len(idx) and len(take) < n:
                take.append(idx[i])
        i += 1
    return np.asarray(sorted(take))


def _train_config(step: TrainKnobs, seed: int, bf16: bool | None = None) -> TrainConfig:
    extra = {} if bf16 is None else {"bf16": bf16}  # None: TrainConfig's per-CPU default
    return TrainConfig(
        epochs=step.epochs,
        lr=step.lr,
        weight_decay=step.weight_decay,
        batch_size=step.batch_size,
        warmup_epochs=step.warmup_epochs,
        seed=seed,
        label_smoothing=0.1,
        **extra,
    )


def _fit(
    ctx: Context,
    model: nn.Module,
    step: TrainKnobs,
    hooks: Hooks | None = None,
    desc: str = "",
    bf16: bool | None = None,
) -> list[dict[str, Any]]:
    cfg = _train_config(step, ctx.recipe.seed, bf16)
    log_path = ctx.out / f"{ctx.name}.train.jsonl"
    history = fit(
        model,
        ctx.train,
        cfg,
        ctx.prep,
        val=None,
        hooks=hooks,
        log_path=log_path,
        desc=desc or getattr(step, "type", "train"),
    )
    ctx.trained = True
    return history


# --- steps -----------------------------------------------------------------------------------


def step_sparsity_train(ctx: Context, step: SparsityTrain) -> dict[str, Any]:
    hook = prune.slimming_regularizer(ctx.model, step.reg, ctx.prep.size)
    _fit(ctx, ctx.model, step, Hooks(after_backward=hook), desc="sparsity")
    return {"reg": step.reg, **prune.bn_scale_summary(ctx.model)}


def step_prune(ctx: Context, step: Prune) -> dict[str, Any]:
    ctx.model = contiguous(ctx.model)
    return prune.prune_channels(
        ctx.model,
        step.criterion,
        step.target_macs_reduction,
        step.round_to,
        step.max_layer_ratio,
        input_size=ctx.prep.size,
    )


def step_finetune(ctx: Context, step: Finetune) -> dict[str, Any]:
    record: dict[str, Any] = {"distill": step.distill.model_dump() if step.distill else None}
    if step.compare_without_distill:
        plain = copy.deepcopy(ctx.model)
        _fit(ctx, plain, step, desc="finetune (no KD)")
        record["top1_without_distill"] = ctx.evaluate(plain)
    hooks = None
    if step.distill is not None:
        hooks = Hooks(
            loss_fn=distill_loss(ctx.teacher(step.distill), step.distill.temperature, step.distill.alpha, 0.0)
        )
    _fit(ctx, ctx.model, step, hooks, desc="finetune" + (" (KD)" if hooks else ""))
    if step.compare_without_distill:
        record["top1_with_distill"] = ctx.evaluate()
    return record


def step_unstructured(ctx: Context, step: Unstructured) -> dict[str, Any]:
    info = sparsity.unstructured(ctx.model, step.amount)
    _fit(ctx, ctx.model, step, desc="finetune (masked)")
    sparsity.make_permanent(ctx.model)
    return {
        **info,
        "zeros_after_finetune": sparsity.zero_fraction(ctx.model),
        "note": "dense runtimes (ONNX Runtime CPU, TensorRT dense kernels) run zeros at full cost: "
        "expect no speed-up, only a smaller compressed (gzip) file",
    }


def step_sparse24(ctx: Context, step: Sparse24) -> dict[str, Any]:
    info = sparsity.apply_2to4(ctx.model)
    _fit(ctx, ctx.model, step, desc="finetune (2:4)")
    sparsity.make_permanent(ctx.model)
    check = sparsity.check_2to4(ctx.model)
    if not all(check.values()):
        raise EdgeloopError(f"2:4 pattern broken after fine-tuning in {[k for k, v in check.items() if not v]}")
    return {
        **info,
        "pattern_holds": check,
        "zeros": sparsity.zero_fraction(ctx.model),
        "note": "only TensorRT on Ampere/Orin GPUs with sparse weights enabled (edgeloop-agent bench "
        "--sparse) turns 2:4 into speed, and only for wide layers; on the CPU it is a dense model",
    }


def _meta(ctx: Context, precision: str = "fp32", **extra: str) -> ModelMeta:
    return ModelMeta(ctx.source.classes, ctx.prep, ctx.source.arch, precision, {"recipe": ctx.name, **extra})


def step_export(ctx: Context, step: Export) -> dict[str, Any]:
    model = contiguous(ctx.model).eval()
    folded = fold_bn(model)
    out = ctx.out / f"{ctx.name}.onnx"
    sparse = "2:4" if any(s.type == "sparse24" for s in ctx.recipe.steps) else "dense"
    parity = export_verified(
        folded, out, _meta(ctx, sparsity=sparse, bn_folded="true"), reference=model, atol=step.atol
    )
    ctx.onnx_fp32 = out
    ctx.outputs.append(out.name)
    import onnx

    bn_nodes = sum(n.op_type == "BatchNormalization" for n in onnx.load(str(out)).graph.node)
    return {
        "file": out.name,
        "bn_layers_folded": count_bn(model),
        "bn_nodes_in_onnx": bn_nodes,
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity_top1_agreement": parity.top1_agreement,
    }


def step_ptq(ctx: Context, step: PTQ) -> dict[str, Any]:
    if ctx.onnx_fp32 is None:
        raise EdgeloopError("ptq needs an exported FP32 ONNX (add an 'export' step before it)")
    images = ctx.calibration_images(step.calibration_images)
    records: dict[str, Any] = {}
    for flavour in step.flavours:
        out = ctx.out / (f"{ctx.name}-int8.onnx" if flavour == "onnxruntime" else f"{ctx.name}-int8-trt.onnx")
        rec = quantize.quantize_ptq(
            ctx.onnx_fp32, out, images, flavour, step.method, step.percentile, keep_edges_float=step.keep_edges_float
        )
        ctx.outputs.append(out.name)
        records[flavour] = {"file": out.name, **{k: v for k, v in rec.items() if k != "ranges"}}
        (ctx.out / f"{out.stem}.ranges.json").write_text(json.dumps(rec["ranges"], indent=1))
    return records


def step_qat(ctx: Context, step: QAT) -> dict[str, Any]:
    import onnx

    base = fold_bn(contiguous(ctx.model).eval())
    qmodel, info = qat.prepare_qat(base, ctx.calibration_images(step.calibration_images), ctx.prep)
    _fit(ctx, qmodel, step, desc="QAT", bf16=False)
    qmodel.eval()
    qat.set_exporting(qmodel, True)
    out_trt = ctx.out / f"{ctx.name}-trt.onnx"
    meta = _meta(ctx, "int8", runtime="tensorrt", calibration="qat")
    parity = export_verified(qmodel, out_trt, meta, atol=0.1, min_agreement=0.99, dynamo=False)
    q = onnx.load(str(out_trt))
    changed = qat.to_u8_activations(q)
    from shared.modelmeta import set_meta

    set_meta(q, _meta(ctx, "int8", runtime="onnxruntime", calibration="qat"))
    out_ort = ctx.out / f"{ctx.name}.onnx"
    onnx.save(q, str(out_ort))
    ctx.outputs += [out_trt.name, out_ort.name]
    top = ctx.evaluate(qmodel)
    return {
        "files": [out_trt.name, out_ort.name],
        "fake_quant_top1": top,
        "learned_amax": qat.learned_ranges(qmodel),
        "initial_amax": info["initial_amax"],
        "u8_zero_points_rewritten": changed,
        "export_parity_max_abs_diff": parity.max_abs_diff,
    }


def step_fp16(ctx: Context, step: FP16) -> dict[str, Any]:
    if ctx.onnx_fp32 is None:
        raise EdgeloopError("fp16 needs an exported FP32 ONNX (add an 'export' step before it)")
    out = ctx.out / f"{ctx.name}-fp16.onnx"
    rec = quantize.export_fp16(ctx.onnx_fp32, out)
    ctx.outputs.append(out.name)
    return {"file": out.name, **rec}


STEPS: dict[str, Callable[[Context, Any], dict[str, Any]]] = {
    "sparsity_train": step_sparsity_train,
    "prune": step_prune,
    "finetune": step_finetune,
    "unstructured": step_unstructured,
    "sparse24": step_sparse24,
    "export": step_export,
    "ptq": step_ptq,
    "qat": step_qat,
    "fp16": step_fp16,
}


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
    out.mkdir(parents=True, exist_ok=True)
    train_spec, val_spec = split_data(data, val_data)
    source = checkpoint.load(ckpt_path)
    ctx = Context(recipe, source, source.build(), train_spec, val_spec, out)
    (out / f"{recipe.name}.recipe.toml").write_text(recipe_text)
    (out / f"{recipe.name}.compress.jsonl").unlink(missing_ok=True)
    (out / f"{recipe.name}.train.jsonl").unlink(missing_ok=True)
    source_top1 = ctx.evaluate()
    log.info("source %s: top-1 %s, %d MACs", ckpt_path.name, source_top1, count_macs(ctx.model, ctx.prep.size))
    for i, step in enumerate(recipe.steps, 1):
        t0 = time.perf_counter()
        log.info("step %d/%d: %s", i, len(recipe.steps), step.type)
        details = STEPS[step.type](ctx, step)
        model = contiguous(ctx.model)
        record = {
            "step": i,
            "type": step.type,
            "seconds": round(time.perf_counter() - t0, 1),
            "top1": ctx.evaluate(model) if step.type not in ("export", "ptq", "fp16") else None,
            "macs": count_macs(model, ctx.prep.size),
            "params": count_params(model),
            "params_nonzero": count_params(model, nonzero=True),
            **details,
        }
        ctx.records.append(record)
        with (out / f"{recipe.name}.compress.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            "step %d %s done in %.0fs: top-1 %s, MACs %d",
            i,
            step.type,
            record["seconds"],
            record["top1"],
            record["macs"],
        )
    model = contiguous(ctx.model).eval()
    final_top1 = ctx.evaluate(model)
    summary: dict[str, Any] = {
        "name": recipe.name,
        "arch": source.arch,
        "parent": ckpt_path.name,
        "source_top1": source_top1,
        "metrics": {"top1": final_top1, "n_images": len(ctx.val) if ctx.val is not None else None, "dataset": val_spec},
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
    if ctx.trained or any(s.type == "prune" for s in recipe.steps):
        ck = checkpoint.from_model(
            model,
            source.arch,
            source.classes,
            source.preprocessing,
            summary["metrics"],
            {"parent": ckpt_path.name, "recipe": recipe.name},
        )
        checkpoint.save(ck, out / f"{recipe.name}.pt")
        summary["checkpoint"] = f"{recipe.name}.pt"
        card.write_card(out / f"{recipe.name}.json", summary)
    else:
        card.write_card(out / f"{recipe.name}.compress.json", summary)
    return summary
