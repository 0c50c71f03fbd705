"""A command that comes again is not run again, but its answer is sent again (the host resends a command it
heard nothing back for: the command, or the report, may have been lost by a restarting broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.agent import Agent
from device.config import load_config
from shared import protocol as p
from tests.shared.factories import manifest


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    cfg = load_config(
        None, device_id="dev", state_dir=str(tmp_path), require_signature=False, broker={"url": "mqtt://127.0.0.1:9"}
    )
    a = Agent(cfg)
    yield a
    a.engines.close()
    a.outbox.close()


def _pending(agent: Agent) -> list[tuple[str, bytes]]:
    return [(e.topic.rsplit("/", 1)[-1], e.payload) for e in agent.outbox.pending()]


def test_a_command_that_comes_again_is_answered_again_and_not_run_again(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[uuid.UUID] = []

    class Handler:
        def handle(self, ctx: Agent, cmd: p.BenchmarkCommand) -> None:
            runs.append(cmd.message_id)
            ctx.report(p.DeployReport(device_id="dev", command_id=cmd.message_id, release=manifest().ref, ok=True))

    monkeypatch.setattr("device.commands.handler_for", lambda kind: Handler())
    cmd = p.BenchmarkCommand(device_id="dev")
    payload = p.encode(cmd)
    agent.handle(payload)
    (first,) = _pending(agent)
    assert first[0] == "deploy"
    for e in agent.outbox.pending():
        agent.outbox.ack(e.id)  # the broker took it (and, say, lost it in a restart)
    agent.handle(payload)  # the host heard nothing and sent the same command again
    assert runs == [cmd.message_id]  # run once
    again, event = _pending(agent)
    assert again == first  # the same report (same message id) once more
    report = p.decode_report(event[1])
    assert isinstance(report, p.EventReport) and (report.code, report.level) == ("duplicate_command", "info")
    assert agent.counters["duplicates"] == 1


def test_a_repeat_of_a_command_that_answered_nothing_is_reported_as_a_duplicate(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("device.commands.handler_for", lambda kind: type("H", (), {"handle": lambda s, c, m: None})())
    payload = p.encode(p.BenchmarkCommand(device_id="dev"))
    agent.handle(payload)
    agent.handle(payload)
    (event,) = [p.decode_report(e.payload) for e in agent.outbox.pending()]
    assert isinstance(event, p.EventReport) and (event.code, event.level) == ("duplicate_command", "warning")
