"""Training: SGD + cosine/one-cycle schedule, crop+flip augmentation, label smoothing.

``loop.fit`` is the one training loop of the project. ``edgeloop train`` (``command``) calls it
from scratch, and the compression steps call it for sparsity training, fine-tuning and
distillation through ``Hooks``. The other modules each hold one part: ``config`` (the knobs),
``augment``, ``schedule`` (learning rate), ``losses`` (cross-entropy, distillation) and ``data``.
"""

from host.factory.train.augment import CropFlip
from host.factory.train.command import train_command
from host.factory.train.config import TrainConfig, fast_bf16
from host.factory.train.data import load_split
from host.factory.train.loop import Hooks, ModelHook, fit
from host.factory.train.losses import LossFn, default_loss, distill_loss

__all__ = [
    "CropFlip",
    "Hooks",
    "LossFn",
    "ModelHook",
    "TrainConfig",
    "default_loss",
    "distill_loss",
    "fast_bf16",
    "fit",
    "load_split",
    "train_command",
]
