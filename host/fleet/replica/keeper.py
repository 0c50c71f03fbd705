"""The replica's lease keeper: one thread that renews what this replica holds, takes the controller lease
over when its holder stops renewing it, and adopts the ingest slots of replicas that are gone.

Renewal comes every third of the lease, so two renewals may fail (a slow database, a pause) before the
lease is lost. A replica that does not hold the controller lease wakes up when the holder's lease is due
to expire (on the database's clock), so a takeover comes within the lease's length of the holder's end.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from host.fleet.ingest import IngestStats
from host.fleet.replica.lease import HeldLease
from host.fleet.store import Store
from host.fleet.store.leases import LeaseRecord
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

CONTROLLER = "controller"  # the lease of the rollout controller (one for every rollout: they are few)
SLOT_PREFIX = "ingest-"
QUIET_S = 1.0  # an adopted session is drained once nothing came for this long, with everything stored


def slot_lease(slot: int) -> str:
    return f"{SLOT_PREFIX}{slot}"


def _slot(name: str) -> int | None:
    tail = name.removeprefix(SLOT_PREFIX)
    return int(tail) if name.startswith(SLOT_PREFIX) and tail.isdigit() else None


class Drainable(Protocol):
    """An ingest worker that resumes an adopted slot's session, stores what it holds, then ends it."""

    stats: IngestStats

    def start(self) -> None: ...

    def quiet(self, seconds: float) -> bool: ...

    def stop(self, timeout: float = 10.0, end_session: bool = False) -> None: ...


class ReplicaKeeper:
    def __init__(
        self, store: Store, replica_id: str, lease_s: float, adopt: Callable[[int], Drainable] | None = None
    ) -> None:
        self.store, self.replica_id, self.lease_s = store, replica_id, lease_s
        self.controller = HeldLease(CONTROLLER, replica_id, lease_s)
        self.slots: dict[int, HeldLease] = {}  # this replica's own ingest workers
        self.draining: dict[int, tuple[HeldLease, Drainable]] = {}  # adopted from replicas that are gone
        self.takeovers = 0
        self.adopt = adopt  # how to resume an orphaned slot's session (None: no shared subscription)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-leases", daemon=True)

    # -- at start -----------------------------------------------------------------------------------
    def claim_slots(self, n: int) -> list[int]:
        """Ingest slots for ``n`` workers: this replica's own from before a restart first, then slots whose
        holder is gone (their sessions are resumed, not lost), then new ones."""
        existing = self.store.leases(SLOT_PREFIX)
        mine = [s for x in existing if x.holder == self.replica_id and (s := _slot(x.name)) is not None]
        free = [s for x in existing if x.holder != self.replica_id and x.remaining_s <= 0 and (s := _slot(x.name))
                is not None]  # fmt: skip
        known = {s for x in existing if (s := _slot(x.name)) is not None}
        unused = (s for s in itertools.count() if s not in known)
        for tried, slot in enumerate(itertools.chain(sorted(mine), sorted(free), unused)):
            if len(self.slots) == n:
                break
            if tried > n + len(known) + 100:  # every try lost a race: something else is wrong
                raise EdgeloopError(f"replica {self.replica_id} could not claim {n} ingest slots in the store")
            lease = HeldLease(slot_lease(slot), self.replica_id, self.lease_s)
            if self._acquire(lease, reclaim=slot in mine):
                self.slots[slot] = lease
        log.info("replica %s: ingest slots %s", self.replica_id, sorted(self.slots))
        return sorted(self.slots)

    def start(self) -> None:
        """Take the controller lease now if it is free (a single process controls from its first tick)."""
        self._pass(first=True)
        self._thread.start()

    def stop(self) -> None:
        """Give everything up at once, so that another replica takes over without waiting for expiry."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for _slot_no, (lease, drain) in list(self.draining.items()):
            drain.stop()
            self._release(lease)
        for lease in [self.controller, *self.slots.values()]:
            self._release(lease)

    # -- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        wait = self.lease_s / 3
        while not self._stop.wait(wait):
            try:
                wait = self._pass()
            except Exception:  # the database may be away for a while; try again soon
                log.exception("replica %s: lease upkeep failed", self.replica_id)
                wait = min(1.0, self.lease_s / 3)

    def _pass(self, first: bool = False) -> float:
        """Renew, take over, adopt; returns how long to sleep."""
        for lease in [self.controller, *self.slots.values(), *(d[0] for d in self.draining.values())]:
            if lease.epoch is not None:
                self._renew(lease)
        leases = {x.name: x for x in self.store.leases()}
        wait = self.lease_s / 3
        if self.controller.epoch is None:
            if self._acquire(self.controller, reclaim=first):
                self.takeovers += 0 if first else 1
                log.warning("replica %s holds the controller lease (epoch %s)", self.replica_id, self.controller.epoch)
            elif (held := leases.get(CONTROLLER)) is not None:
                wait = min(wait, max(0.05, held.remaining_s + 0.05))  # wake up when it expires
        self._adopt_orphans(leases.values())
        self._finish_drained()
        return wait

    def _acquire(self, lease: HeldLease, reclaim: bool = False) -> bool:
        asked = time.monotonic()
        epoch = self.store.acquire_lease(lease.name, self.replica_id, self.lease_s, reclaim=reclaim)
        if epoch is not None:
            lease.granted(epoch, asked)
        return epoch is not None

    def _renew(self, lease: HeldLease) -> None:
        asked, epoch = time.monotonic(), lease.epoch
        if epoch is not None and self.store.renew_lease(lease.name, self.replica_id, epoch, self.lease_s):
            lease.granted(epoch, asked)
            return
        lease.lost()
        log.error("replica %s lost lease %s (epoch %s): another replica took it over", self.replica_id,
                  lease.name, epoch)  # fmt: skip

    def _release(self, lease: HeldLease, drop: bool = False) -> None:
        epoch = lease.lost()
        if epoch is not None:
            try:
                self.store.release_lease(lease.name, self.replica_id, epoch, drop=drop)
            except Exception:  # it expires by itself
                log.exception("could not release lease %s", lease.name)

    # -- ingest slots of replicas that are gone ---------------------------------------------------------
    def _adopt_orphans(self, leases: Iterable[LeaseRecord]) -> None:
        if self.adopt is None:
            return
        for x in leases:
            slot = _slot(x.name)
            if slot is None or x.remaining_s > 0 or slot in self.slots or slot in self.draining:
                continue
            lease = HeldLease(x.name, self.replica_id, self.lease_s)
            if self._acquire(lease):
                log.warning("replica %s adopts ingest slot %d of %s (its lease expired): draining its session",
                            self.replica_id, slot, x.holder)  # fmt: skip
                drain = self.adopt(slot)
                drain.start()
                self.draining[slot] = (lease, drain)

    def _finish_drained(self) -> None:
        for slot, (lease, drain) in list(self.draining.items()):
            if drain.quiet(QUIET_S):
                drain.stop(end_session=True)  # the broker forgets the session: nothing queues for it any more
                self._release(lease, drop=True)
                del self.draining[slot]
                log.info("replica %s: ingest slot %d drained and closed (%d reports stored from it, %d already were)",
                         self.replica_id, slot, drain.stats.written, drain.stats.duplicates)  # fmt: skip

    def status(self) -> dict[str, object]:
        return {
            "id": self.replica_id,
            "controller": self.controller.holds(),
            "controller_epoch": self.controller.epoch,
            "lease_s": self.lease_s,
            "ingest_slots": sorted(self.slots),
            "draining_slots": sorted(self.draining),
            "takeovers": self.takeovers,
        }
