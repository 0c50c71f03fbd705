"""``edgeloop-agent serve MODEL.onnx``: the inference API on one ONNX file, without the daemon.

Class names, preprocessing and the drift reference come from the file's edgeloop metadata (an
``edgeloop export`` / ``release create`` file carries them), so answers and drift match the daemon's.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from pathlib import Path

from device.engine.reference import summary_from_meta
from device.engine.runtimes import registry
from device.engine.runtimes.base import RuntimeConfig
from device.serving.config import InferenceConfig
from device.serving.model import ServedModel
from device.serving.server import InferenceServer
from shared.errors import EdgeloopError
from shared.modelmeta import read_meta
from shared.protocol import Precision

log = logging.getLogger(__name__)


def load_served(model: Path, runtime: RuntimeConfig, precision: Precision | None, work: Path) -> ServedModel:
    meta = read_meta(model)
    rt = registry.load_onnx(runtime, model, precision or meta.precision, work)
    return ServedModel(rt, meta.classes, meta.preprocessing, None, summary_from_meta(meta))


def serve_command(
    model: Path, config: InferenceConfig, runtime: RuntimeConfig, precision: Precision | None, stop: threading.Event
) -> None:
    """Build, warm up and serve ``model`` until ``stop`` is set."""
    if not model.is_file():
        raise EdgeloopError(f"model not found: {model}")
    with tempfile.TemporaryDirectory(prefix="edgeloop-serve-") as tmp:
        served = load_served(model, runtime, precision, Path(tmp))
        server = InferenceServer(config)
        try:
            server.start()
            server.serve(served)
            rt = served.runtime
            print(
                json.dumps(
                    {
                        "serving": str(model),
                        "url": server.url,
                        "runtime": rt.name,
                        "precision": rt.engine.precision,
                        "max_batch": config.max_batch,
                        "max_delay_ms": config.max_delay_ms,
                        "drift_reference": served.reference is not None,
                    }
                ),
                flush=True,
            )
            stop.wait()
        finally:
            server.stop()
