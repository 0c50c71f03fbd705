from __future__ import annotations

from pathlib import Path

from device.outbox import Outbox


def test_order_ack_and_persistence(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    ids = [box.put(f"t/{i}", f"p{i}".encode(), f"m{i}") for i in range(5)]
    assert [e.topic for e in box.pending()] == [f"t/{i}" for i in range(5)]
    assert [e.id for e in box.pending(after_id=ids[1], limit=2)] == ids[2:4]
    box.ack(ids[0])
    box.ack(ids[3])
    box.close()
    again = Outbox(tmp_path / "o.sqlite")  # a restarted agent sees what was never acknowledged
    assert [e.message_id for e in again.pending()] == ["m1", "m2", "m4"]
    assert len(again) == 3


def test_command_dedup_survives_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert box.first_time("a") is True
    assert box.first_time("a") is False
    box.close()
    assert Outbox(tmp_path / "o.sqlite").first_time("a") is False
