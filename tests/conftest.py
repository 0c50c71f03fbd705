from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, Mosquitto, mosquitto_available

pytest_plugins = ["tests.fixtures"]

ZOO = REPO / "host" / "zoo"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if not gpu_items:
        return
    from device.engine.runtimes.tensorrt import TensorRTRuntime

    reason = TensorRTRuntime.probe()
    if reason is not None:
        skip = pytest.mark.skip(reason=f"no TensorRT GPU here: {reason.split(':')[0]}")
        for item in gpu_items:
            item.add_marker(skip)


# What the chaos, fuzz and failover tests print (their counts) is shown after the run, not only on failure:
# CI's log carries the figures the issues ask for.
_COUNTS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.capstdout.strip() and "e2e" in report.keywords:
        _COUNTS.append((report.nodeid, report.capstdout.strip()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _COUNTS:
        terminalreporter.section("counts printed by the end-to-end tests")
        for nodeid, text in _COUNTS:
            terminalreporter.write_line(f"{nodeid}:")
            for line in text.splitlines():
                terminalreporter.write_line(f"  {line}")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    from shared.samples import golden_dir

    return golden_dir()


@pytest.fixture(scope="session")
def zoo_onnx() -> Path:
    path = ZOO / "resnet20.onnx"
    if not path.exists():
        pytest.fail(f"{path} is missing: the zoo baseline must be committed")
    return path


@pytest.fixture(scope="session")
def zoo_checkpoint() -> Path:
    path = ZOO / "resnet20.pt"
    if not path.exists():
        pytest.fail(f"{path} is missing: the zoo baseline must be committed")
    return path


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if not mosquitto_available():
        if os.environ.get("CI") or os.environ.get("EDGELOOP_REQUIRE_BROKER"):
            pytest.fail("mosquitto is not installed (CI installs it: apt-get install -y mosquitto)")
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    broker = Mosquitto(tmp_path / "broker")
    broker.workdir.mkdir()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
