from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from device.serving.config import InferenceConfig
from device.serving.model import ServedModel
from device.serving.server import InferenceServer
from shared.modelmeta import read_meta


@pytest.fixture
def served_model(zoo_onnx: Path, tmp_path: Path) -> Iterator[ServedModel]:
    """The zoo baseline on ONNX Runtime (one thread), ready to serve."""
    meta = read_meta(zoo_onnx)
    rt = OnnxRuntimeRuntime(OnnxRuntimeConfig(threads=1))
    rt.load(rt.build(zoo_onnx, "fp32", tmp_path / "engine"))
    try:
        yield ServedModel(rt, meta.classes, meta.preprocessing, "resnet20@1.0.0")
    finally:
        rt.close()


@pytest.fixture
def inference_server(served_model: ServedModel) -> Iterator[InferenceServer]:
    """A real inference API on a free loopback port, serving the zoo baseline."""
    server = InferenceServer(InferenceConfig(listen="127.0.0.1:0", max_body_kb=64))
    server.start()
    server.serve(served_model)
    try:
        yield server
    finally:
        server.stop()
