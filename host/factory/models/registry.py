"""Explicit registry of model architectures: a decorator fills a dict, nothing is discovered by magic."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from shared.errors import EdgeloopError

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory`` under ``name``; a second registration of the same name is a bug."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Instantiate a registered architecture."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise EdgeloopError(f"unknown architecture {name!r}; choose one of: {', '.join(available())}") from None
    return factory(num_classes=num_classes, **kwargs)
