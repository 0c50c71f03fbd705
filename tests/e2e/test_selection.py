"""The device picks what it runs by measurement: a real agent over a real Mosquitto, real runtimes.

With ONNX Runtime and OpenVINO both installed and ``[runtime] type = "auto"``, the agent times every
runtime x precision of the release, verifies each INT8 engine against FP32, and runs the fastest one
that verifies; its DeployReport says what it tried and why the winner won. A ``[selection]`` pin is
respected. The figures are whatever this machine measures: the test checks the choice against them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore, create_release
from shared import protocol as p
from tests.conftest import ZOO
from tests.e2e.conftest import StartAgent
from tests.helpers import Mosquitto, Recorder, signed

pytestmark = pytest.mark.e2e

FAST = p.BenchSettings(warmup=2, iterations=10, throughput_batch=16, throughput_rounds=1, eval_limit=50)
SELECTION = "[selection]\nbatch = 64\nseconds = 0.6\n"
AUTO = 'type = "auto"\n[runtime.onnxruntime]\nthreads = 1\n[runtime.openvino]\n'


def _release(store: ReleaseStore, keys: tuple[Path, Path], tmp_path: Path) -> p.ReleaseManifest:
    build = tmp_path / "build"
    build.mkdir()
    for name in ("resnet20-slim.onnx", "resnet20-slim-int8.onnx"):
        shutil.copy(ZOO / name, build / name)
    return create_release(build, "slim", "1.0.0", store, sign_key=keys[0], source_top1=0.89)


def _deploy(rec: Recorder, m: p.ReleaseManifest, served: str, key: Path, device: str) -> p.DeployReport:
    rec.publish(
        p.command_topic("lab", device),
        signed(p.DeployCommand(device_id=device, manifest=m, base_url=served, bench=FAST), key),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for raw in rec.topics(f"{device}/report/deploy"):
            report = p.decode_report(raw)
            if isinstance(report, p.DeployReport):
                return report
        time.sleep(0.2)
    raise TimeoutError(f"no DeployReport from {device}")


def _threads_key() -> str:
    """The OpenVINO backend's thread count (one thread, like ONNX Runtime's, for a fair race)."""
    return "threads = 1\n"


def test_the_agent_runs_the_fastest_verified_runtime_and_precision(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    store: ReleaseStore,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    m = _release(store, keys, tmp_path)
    start_agent("dev-1", extra=SELECTION, runtime=AUTO + _threads_key())
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    dep = _deploy(rec, m, served, keys[0], "dev-1")
    rec.close()
    assert dep.ok, dep.error
    timed = [c for c in dep.candidates if c.throughput_ips is not None]
    assert {(c.runtime, c.precision) for c in timed} >= {
        ("onnxruntime", "int8"),
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
    } and any(c.runtime == "openvino" and c.precision == "int8" for c in dep.candidates), dep.candidates
    verified = [c for c in timed if c.precision != "int8" or c.verified]
    winner = max(verified, key=lambda c: c.throughput_ips or 0.0)
    (chosen,) = [c for c in dep.candidates if c.chosen]
    assert chosen == winner and (dep.runtime, dep.precision) == (winner.runtime, winner.precision)
    assert chosen.note.startswith("fastest verified") and "x the runner-up" in chosen.note
    assert all(c.verified for c in timed if c.precision == "int8"), "an INT8 candidate was timed unverified"
    assert dep.selection_s is not None and dep.selection_s > 0


def test_a_pinned_runtime_and_precision_are_respected(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    store: ReleaseStore,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    m = _release(store, keys, tmp_path)
    pin = SELECTION + 'runtime = "onnxruntime"\nprecision = "fp32"\n'
    start_agent("dev-2", extra=pin, runtime='type = "auto"\n[runtime.onnxruntime]\nthreads = 1\n')
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    dep = _deploy(rec, m, served, keys[0], "dev-2")
    rec.close()
    assert dep.ok and (dep.runtime, dep.precision) == ("onnxruntime", "fp32")
    assert [(c.runtime, c.precision, c.chosen) for c in dep.candidates] == [("onnxruntime", "fp32", True)]
