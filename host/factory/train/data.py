"""Labelled image sets decoded into memory for training."""

from __future__ import annotations

from tqdm import tqdm

from shared import datasets
from shared.datasets import LabelledImages


def load_split(spec: str, classes: tuple[str, ...] | None, desc: str, size: int = 32) -> LabelledImages:
    """Decode a labelled set into memory once (the training loop then never touches the disk)."""
    samples = datasets.list_samples(spec)
    classes = classes or datasets.class_names(samples)
    labels = datasets.label_indices(samples, classes)
    with tqdm(total=len(samples), desc=f"decode {desc}", unit="img", disable=None) as bar:
        images = datasets.decode_all(samples, size=size, progress=bar.update)
    return LabelledImages(images=images, labels=labels, classes=classes)
