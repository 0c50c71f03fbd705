"""A test-only backend, to show that everything reads the runtime registry.

The ``fake_runtime`` fixture (tests/device/conftest.py) registers it for one test.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from device.engine.runtimes.base import F32, Engine, Precision, Runtime, RuntimeConfig, Timing


class FakeConfig(RuntimeConfig):
    type: Literal["fake"] = "fake"
    classes: int = Field(10, ge=1, description="logits per image")


class FakeRuntime(Runtime):
    """Zeros for logits; ``available`` switches its probe. The top priority: ``auto`` tries it first."""

    name: ClassVar[str] = "fake"
    config_class: ClassVar[type[FakeConfig]] = FakeConfig
    priority: ClassVar[int] = 1000
    available: ClassVar[bool] = True
    config: FakeConfig

    def __init__(self, config: FakeConfig | None = None) -> None:
        super().__init__(config or FakeConfig())

    @classmethod
    def probe(cls) -> str | None:
        return None if cls.available else "fake: switched off for this test"

    def version(self) -> str:
        return "0.0"

    def accelerator(self) -> str:
        return "cpu"

    def _build_impl(self, onnx_path: Path, precision: Precision, out_dir: Path) -> Engine:
        path = out_dir / "model.fake"
        path.write_bytes(onnx_path.read_bytes())
        return Engine(path, self.name, precision, "input", (3, 32, 32), 64)

    def _load_impl(self, engine: Engine) -> None:
        pass

    def _infer_impl(self, batch: F32) -> tuple[F32, Timing | None]:
        return np.zeros((batch.shape[0], self.config.classes), np.float32), None
