"""CIFAR architectures behind an explicit registry."""

from host.factory.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from host.factory.models.registry import available, build, register

__all__ = ["available", "build", "register"]
