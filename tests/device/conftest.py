"""Fixtures of the device tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from device.engine.runtimes import registry
from tests.device.fakes import FakeRuntime


@pytest.fixture
def fake_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeRuntime]]:
    """``FakeRuntime`` registered for the test only (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_RUNTIMES", dict(registry._RUNTIMES))
    monkeypatch.setattr(FakeRuntime, "available", True)
    yield registry.register(FakeRuntime)
