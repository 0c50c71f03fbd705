"""On a Jetson where TensorRT cannot load, the agent warns loudly and says so in its status (issue 21, item 5)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from device.agent import Agent
from device.config import load_config
from device.engine.jetson import release
from device.engine.runtimes import registry
from device.engine.runtimes.tensorrt import TensorRTRuntime
from device.engine.runtimes.tensorrt.util import INSTALL_HINT
from shared.protocol import DeviceStatus

REASON = "no CUDA device found"  # a probe failure whose own text has no fix in it


def _status(tmp_path: Path, **kw: object) -> DeviceStatus:
    cfg = load_config(
        None,
        device_id="dev",
        state_dir=str(tmp_path),
        require_signature=False,
        broker={"url": "mqtt://127.0.0.1:9"},
        **kw,
    )
    agent = Agent(cfg)
    try:
        return agent._status("online", system=False)
    finally:
        agent.engines.close()
        agent.outbox.close()


@pytest.fixture
def failing_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TensorRTRuntime, "probe", classmethod(lambda cls: REASON))


def test_a_jetson_without_tensorrt_warns_and_says_so_in_its_status(
    failing_tensorrt: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(release, "is_jetson", lambda: True)
    with caplog.at_level(logging.INFO):
        status = _status(tmp_path)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "tensorrt cannot run" in r.getMessage()]
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert message == f"tensorrt cannot run on this Jetson: {REASON} (fix: {INSTALL_HINT})"
    assert status.warnings == (message,)
    assert DeviceStatus.model_validate_json(status.model_dump_json()).warnings == (message,)  # on the wire too


def test_the_fallback_itself_is_a_warning_on_a_jetson(
    failing_tensorrt: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(release, "is_jetson", lambda: True)
    with caplog.at_level(logging.INFO), registry.create(registry.AutoConfig()) as rt:
        assert rt.name != "tensorrt"
    fallback = [r for r in caplog.records if "falling back to" in r.getMessage()]
    assert fallback and fallback[0].levelno == logging.WARNING and REASON in fallback[0].getMessage()


def test_off_a_jetson_or_with_another_runtime_chosen_there_is_nothing_to_warn_about(
    failing_tensorrt: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(release, "is_jetson", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert _status(tmp_path / "x86").warnings == ()
    monkeypatch.setattr(release, "is_jetson", lambda: True)
    with caplog.at_level(logging.WARNING):
        assert _status(tmp_path / "ort", runtime={"type": "onnxruntime"}).warnings == ()
    assert "cannot run" not in caplog.text


def test_status_warnings_are_bounded() -> None:
    fields = {"device_id": "d", "fleet": "f", "state": "online"}
    with pytest.raises(ValueError, match="at most 8 items"):
        DeviceStatus.model_validate({**fields, "warnings": ["w"] * 9})
    with pytest.raises(ValueError, match="at most 512 characters"):
        DeviceStatus.model_validate({**fields, "warnings": ["w" * 513]})
