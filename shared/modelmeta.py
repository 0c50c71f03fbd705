"""Metadata embedded in every ONNX file edgeloop writes, so a bare .onnx is self-describing.

Stored as ONNX ``metadata_props``: class names, preprocessing, architecture and precision.
Reading uses the ``onnx`` package (lazily imported) and does not load external weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import EdgeloopError
from shared.imaging import Preprocessing

PREFIX = "edgeloop."


@dataclass
class ModelMeta:
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    arch: str = "unknown"
    precision: str = "fp32"
    extra: dict[str, str] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        props = {
            "classes": json.dumps(list(self.classes)),
            "preprocessing": json.dumps(self.preprocessing.to_dict()),
            "arch": self.arch,
            "precision": self.precision,
            **self.extra,
        }
        return {PREFIX + k: v for k, v in props.items()}


def from_props(props: dict[str, str], source: str = "model") -> ModelMeta:
    p = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
    if "classes" not in p or "preprocessing" not in p:
        raise EdgeloopError(
            f"{source} carries no edgeloop metadata (class names, preprocessing); "
            "export it with `edgeloop export` or pass the classes explicitly"
        )
    try:
        classes = tuple(str(c) for c in json.loads(p.pop("classes")))
        prep = Preprocessing.from_dict(json.loads(p.pop("preprocessing")))
    except (ValueError, TypeError, KeyError) as e:
        raise EdgeloopError(f"{source}: malformed edgeloop metadata: {e}") from e
    return ModelMeta(classes, prep, p.pop("arch", "unknown"), p.pop("precision", "fp32"), p)


def set_meta(model: Any, meta: ModelMeta) -> None:
    """Write ``meta`` into an ``onnx.ModelProto`` (replacing earlier edgeloop entries)."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for k, v in [*keep, *meta.to_props().items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def get_meta(model: Any, source: str = "model") -> ModelMeta:
    return from_props({p.key: p.value for p in model.metadata_props}, source)


def read_meta(path: str | Path) -> ModelMeta:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise EdgeloopError(f"{path} is not a readable ONNX model: {e}") from e
    return get_meta(model, str(path))
