"""The drift reference of a model: what held-out labelled images look like to it (``shared.drift``).

The host computes it at release time (``edgeloop release create``) and at export, with the same
runtime code a device runs, and stores it in the manifest and the ONNX metadata. Held-out images,
not the training or calibration images: a network is surer of the images it was trained on (the
zoo model: 98% train vs 89% test accuracy), and a reference taken on them made clean test windows
score 0.45 of the alarm level, against 0.08-0.19 with the 200 held-out golden images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.engine.runtimes import registry
from device.engine.runtimes.base import Runtime
from shared import datasets, drift, imaging
from shared.datasets import Sample
from shared.drift import Summary
from shared.imaging import Preprocessing
from shared.modelmeta import ModelMeta, get_meta, read_meta, set_meta
from shared.protocol import DriftReference
from shared.samples import golden_dir

log = logging.getLogger(__name__)

REFERENCE_KEY = "drift_reference"  # edgeloop.drift_reference in the ONNX metadata


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Class probabilities of a batch of logits, in place of a copy (what the serving batcher answers with)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def summary_from_meta(meta: ModelMeta) -> Summary | None:
    """The drift reference stored in an ONNX file's metadata, if it has one."""
    text = meta.extra.get(REFERENCE_KEY)
    if not text:
        return None
    try:
        return DriftReference.model_validate_json(text).summary()
    except ValueError as e:
        log.warning("ignoring a malformed drift reference in the model metadata: %s", e)
        return None


def reference_with(
    runtime: Runtime, samples: Sequence[Sample], classes: Sequence[str], prep: Preprocessing, source: str = ""
) -> DriftReference:
    """The reference of the loaded model on ``samples`` (decoded at the model's input size)."""
    images = datasets.decode_all(samples, size=prep.size)
    probs = np.concatenate(
        [softmax(runtime.infer(imaging.normalize(images[i : i + 256], prep))) for i in range(0, len(images), 256)]
    )
    return DriftReference.from_summary(drift.summarize_images(images, probs, len(classes)), source)


def reference_of(onnx_path: Path, data: str | Path | None = None, limit: int | None = 2000) -> DriftReference:
    """The reference of an ONNX file on ``data`` (default: the golden images), with ONNX Runtime FP32."""
    meta = read_meta(onnx_path)
    spec = str(data) if data is not None else str(golden_dir())
    samples = datasets.list_samples(spec)
    if limit is not None and len(samples) > limit:
        samples = datasets.balanced_subset(samples, limit)
    with registry.open_onnx("onnxruntime", onnx_path) as rt:
        name = "golden images" if data is None else Path(spec).name
        return reference_with(rt, samples, meta.classes, meta.preprocessing, f"{name} ({len(samples)} images)")


def stamp(onnx_path: Path, reference: DriftReference) -> None:
    """Write ``reference`` into an ONNX file's edgeloop metadata (``edgeloop.drift_reference``), in place.

    Only the metadata changes: the graph and the weights are written back as they were read.
    """
    import onnx  # the device extra has it; imported here as every ONNX-touching helper does

    model = onnx.load(str(onnx_path))
    meta = get_meta(model, str(onnx_path))
    meta.extra[REFERENCE_KEY] = reference.model_dump_json()
    set_meta(model, meta)
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(onnx_path)
