"""Several `serve` replicas on one store: leases, fencing, the controller's takeover, ingest slots.

On SQLite and on a PostgreSQL database of the test's own (``EDGELOOP_TEST_POSTGRES_URL``'s server). The
end-to-end failover with real processes is ``tests/e2e/test_replicas.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.fleet.ingest import IngestStats
from host.fleet.replica import ReplicaKeeper
from host.fleet.replica.identity import refuse_live_peers
from host.fleet.rollout import RolloutController
from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store, fencing
from host.fleet.store.fencing import Fence, LeaseLostError
from shared import protocol as p
from shared.errors import EdgeloopError
from tests.pgdb import private_postgres
from tests.shared.factories import manifest


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "h.sqlite")
        return
    with private_postgres() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def test_a_lease_has_one_holder_and_a_new_epoch_at_each_change_of_holder(store: Store) -> None:
    assert store.acquire_lease("controller", "a", 0.5) == 1
    assert store.acquire_lease("controller", "b", 0.5) is None  # held
    assert store.renew_lease("controller", "a", 1, 0.5)
    time.sleep(0.7)  # a stopped renewing
    assert store.acquire_lease("controller", "b", 30) == 2
    assert not store.renew_lease("controller", "a", 1, 30)  # a woke up: too late
    assert store.acquire_lease("controller", "a", 30) is None
    assert store.acquire_lease("controller", "b", 30, reclaim=True) == 3  # a restarted b takes its own back
    (lease,) = store.leases()
    assert (lease.holder, lease.epoch) == ("b", 3) and 25 < lease.remaining_s <= 30
    assert store.release_lease("controller", "b", 3)
    assert store.acquire_lease("controller", "a", 30) == 4  # released: no waiting for expiry


def test_a_write_under_a_lost_lease_is_refused_and_changes_nothing(store: Store) -> None:
    epoch = store.acquire_lease("controller", "a", 0.5)
    assert epoch == 1
    status = p.DeviceStatus(device_id="d1", fleet="lab", state="online")
    with fencing.fenced(Fence("controller", "a", epoch)):
        store.upsert_status(status)  # held: written
        time.sleep(0.7)
        with pytest.raises(LeaseLostError, match="valid False"):  # expired, though nobody took it yet
            store.upsert_status(status.model_copy(update={"state": "busy"}))
        assert store.acquire_lease("controller", "b", 30) == 2
        with pytest.raises(LeaseLostError, match="b, epoch 2"):
            store.upsert_status(status.model_copy(update={"state": "busy"}))
    assert [d.state for d in store.devices("lab")] == ["online"]


def _deploys(sent: list[tuple[str, bytes]]) -> list[str]:
    return [c.device_id for _, raw in sent if isinstance(c := p.decode_command(raw), p.DeployCommand)]


def _answer(store: Store, sent: list[tuple[str, bytes]], m: p.ReleaseManifest) -> None:
    """Every device answers each deploy it was sent: deployed, and measured within the gates."""
    lat = p.LatencyStats(p50=1.0, p90=1.0, p99=1.0, max=1.0, mean=1.0)
    for _, raw in sent:
        c = p.decode_command(raw)
        if isinstance(c, p.DeployCommand):
            dep = p.DeployReport(device_id=c.device_id, command_id=c.message_id, release=m.ref, ok=True)
            bench = p.BenchmarkReport(device_id=c.device_id, command_id=c.message_id, release=m.ref, runtime="ort",
                                      precision="fp32", batch=1, iterations=10, latency_ms=lat,
                                      raw_throughput_ips=1.0, top1=0.99)  # fmt: skip
            store.add_reports([("lab", dep), ("lab", bench)])


class _Replica:
    def __init__(self, url: str, name: str, lease_s: float) -> None:
        self.store = Store(url)
        self.sent: list[tuple[str, bytes]] = []
        self.keeper = ReplicaKeeper(self.store, name, lease_s)
        self.controller = RolloutController(self.store, self._publish, "http://h/", lease=self.keeper.controller)

    def _publish(self, topic: str, payload: bytes) -> bool:
        self.sent.append((topic, payload))
        return True

    def die(self) -> None:
        """As a kill -9 leaves it: nothing released, nothing renewed any more."""
        self.keeper._stop.set()
        self.keeper._thread.join(timeout=10)


def test_the_holder_alone_sends_and_another_replica_takes_over_when_it_stops_renewing(store_url: str) -> None:
    a, b = _Replica(store_url, "a", 2.0), _Replica(store_url, "b", 2.0)
    a.keeper.start()
    b.keeper.start()
    assert a.keeper.controller.holds() and not b.keeper.controller.holds()
    for d in ("d1", "d2", "d3"):
        a.store.upsert_status(p.DeviceStatus(device_id=d, fleet="lab", state="online"))
    m = manifest()
    rid = b.controller.create(m, "lab", RolloutConfig(waves=["1", "100%"], max_accuracy_drop=1.0))  # any replica
    with pytest.raises(EdgeloopError, match="already has rollout"):
        a.controller.create(m, "lab", RolloutConfig())
    a.controller.tick()
    b.controller.tick()
    assert _deploys(a.sent) == ["d1"] and b.sent == []
    _answer(a.store, a.sent, m)
    a.die()
    t0 = time.monotonic()
    while not b.keeper.controller.holds() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert b.keeper.controller.holds() and took <= 2.5, took  # within the lease (+ the keeper's wake-up)
    a.keeper.controller.granted(1, time.monotonic())  # a wakes up believing it still holds epoch 1
    before = len(a.sent)
    for _ in range(3):
        a.controller.tick()  # refused by the fence: stores nothing, so sends nothing
        b.controller.tick()
        _answer(b.store, b.sent, m)
    r = b.store.rollout(rid)
    assert r is not None and r.state == "completed", r
    assert len(a.sent) == before
    assert sorted(_deploys(a.sent) + _deploys(b.sent)) == ["d1", "d2", "d3"]  # one deploy each, whoever sent it
    assert {d.device_id: d.epoch for d in r.devices} == {"d1": 1, "d2": 2, "d3": 2}
    b.keeper.stop()


def test_an_abort_through_a_replica_without_the_lease_is_carried_out_by_the_holder(store_url: str) -> None:
    a, b = _Replica(store_url, "a", 5.0), _Replica(store_url, "b", 5.0)
    a.keeper.start()
    b.keeper.start()
    old, m = p.ReleaseRef(name="r20", version="0.9.0"), manifest()
    a.store.add_release(manifest(version="0.9.0"))
    a.store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", release=old))
    rid = a.controller.create(m, "lab", RolloutConfig(waves=["100%"], max_accuracy_drop=1.0))
    a.controller.tick()
    b.controller.abort(rid, "stop it")
    r = a.store.rollout(rid)
    assert r is not None and r.state == "rolling_back" and r.devices[0].state == "sent" and b.sent == []
    a.controller.tick()
    rollbacks = [c for _, raw in a.sent if isinstance(c := p.decode_command(raw), p.RollbackCommand)]
    assert [(c.device_id, c.target, c.reason) for c in rollbacks] == [("d1", old, "stop it")]
    a.controller.tick()  # sent once: the device's state says it has its rollback
    assert len([1 for _, raw in a.sent if isinstance(p.decode_command(raw), p.RollbackCommand)]) == 1
    for x in (a, b):
        x.keeper.stop()


def test_a_second_live_replica_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "h.sqlite")
    first = ReplicaKeeper(Store(url), "a", 2.0)
    first.start()
    with pytest.raises(EdgeloopError, match="SQLite serves one `edgeloop serve` process"):
        refuse_live_peers(Store(url), "b", 2.0)
    with pytest.raises(EdgeloopError, match="another process runs as replica 'a'"):
        refuse_live_peers(Store(url), "a", 2.0)
    first._stop.set()  # dies: its leases are not renewed any more
    first._thread.join(timeout=10)
    t0 = time.monotonic()
    refuse_live_peers(Store(url), "a", 2.0)  # a restart after a crash: watched for a renewal, then allowed
    assert time.monotonic() - t0 < 2.0


class _FakeDrain:
    def __init__(self) -> None:
        self.started, self.ended = False, False
        self.stats = IngestStats()

    def start(self) -> None:
        self.started = True

    def quiet(self, seconds: float) -> bool:
        return self.started

    def stop(self, timeout: float = 10.0, end_session: bool = False) -> None:
        self.ended = end_session


def test_ingest_slots_are_taken_back_on_restart_and_adopted_when_their_replica_is_gone(store: Store) -> None:
    a = ReplicaKeeper(store, "a", 1.0)
    assert a.claim_slots(2) == [0, 1]
    b = ReplicaKeeper(store, "b", 1.0)
    assert b.claim_slots(1) == [2]
    restarted = ReplicaKeeper(store, "a", 1.0)
    assert restarted.claim_slots(2) == [0, 1]  # its own, at once
    drains: dict[int, _FakeDrain] = {}
    b.adopt = lambda slot: drains.setdefault(slot, _FakeDrain())
    time.sleep(1.2)  # a is gone: slots 0 and 1 expire; b renews its own
    b._renew(b.slots[2])
    b._pass()  # adopts both, drains them (the fake is quiet at once) and closes them
    assert sorted(drains) == [0, 1] and all(d.ended for d in drains.values())
    assert [x.name for x in store.leases("ingest-")] == [f"ingest-{2}"]
    c = ReplicaKeeper(store, "c", 1.0)
    assert c.claim_slots(1) == [0]  # a closed slot's number is free again
