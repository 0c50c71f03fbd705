"""Leases: what one replica of ``edgeloop serve`` holds for a while (the rollout controller, an ingest slot).

A lease is a row: holder, epoch, expiry on the database's clock. It is taken by an ``UPDATE ... WHERE
expires_at < now`` (or an INSERT of a new name), which PostgreSQL runs atomically under the row's lock, so
two replicas that try at once cannot both win; each change of holder adds one to the epoch, the token
``fencing`` checks before a write that leads to commands. The holder renews it (``UPDATE ... WHERE holder
AND epoch``); one that stops renewing loses it when it expires. A lease row rather than a session advisory
lock: an advisory lock belongs to one database connection, which a connection pool hands to any thread and
may close or replace at will (and PgBouncer's transaction pooling shares), so whether the lock is still
held would depend on the pool; a row outlives connections, carries the epoch that fences late writers, and
works the same on SQLite for the single-process default.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from host.fleet.store.base import StoreBase
from host.fleet.store.schema import leases


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    name: str
    holder: str
    epoch: int
    remaining_s: float  # until it expires, on the database's clock (<= 0: expired, anyone may take it)


class LeaseQueries(StoreBase):
    def acquire_lease(self, name: str, holder: str, seconds: float, reclaim: bool = False) -> int | None:
        """Take ``name`` for ``seconds`` if it is free or expired (or, with ``reclaim``, already ``holder``'s);
        returns the new epoch, or None when another holder has it."""
        now = self.db_now()
        with self._lock, self.engine.begin() as conn:
            fresh = self._insert(leases).values(name=name, holder=holder, epoch=1, expires_at=now + seconds)
            if conn.execute(fresh.on_conflict_do_nothing(index_elements=["name"]).returning(leases.c.epoch)).first():
                return 1  # (RETURNING: psycopg reports no rowcount for an INSERT ... ON CONFLICT)
            free = leases.c.expires_at < now
            if reclaim:
                free = sa.or_(free, leases.c.holder == holder)
            taken = conn.execute(
                leases.update()
                .where(leases.c.name == name, free)
                .values(holder=holder, epoch=leases.c.epoch + 1, expires_at=now + seconds)
                .returning(leases.c.epoch)
            ).first()
        return None if taken is None else int(taken[0])

    def renew_lease(self, name: str, holder: str, epoch: int, seconds: float) -> bool:
        """Push the expiry on; False when the lease has another holder or epoch (it was taken over)."""
        stmt = (
            leases.update()
            .where(leases.c.name == name, leases.c.holder == holder, leases.c.epoch == epoch)
            .values(expires_at=self.db_now() + seconds)
        )
        return self._unfenced_write(stmt) == 1

    def release_lease(self, name: str, holder: str, epoch: int, drop: bool = False) -> bool:
        """Let the lease go now (expired, or with ``drop`` deleted) if it is still this holder's."""
        where = (leases.c.name == name, leases.c.holder == holder, leases.c.epoch == epoch)
        stmt = leases.delete().where(*where) if drop else leases.update().where(*where).values(expires_at=0.0)
        return self._unfenced_write(stmt) == 1

    def leases(self, prefix: str = "") -> list[LeaseRecord]:
        q = sa.select(
            leases.c.name, leases.c.holder, leases.c.epoch, (leases.c.expires_at - self.db_now()).label("remaining")
        ).order_by(leases.c.name)
        if prefix:
            q = q.where(leases.c.name.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            return [LeaseRecord(r.name, r.holder, int(r.epoch), float(r.remaining)) for r in conn.execute(q)]

    def _unfenced_write(self, stmt: sa.Executable) -> int:
        with self._lock, self.engine.begin() as conn:
            return max(0, conn.execute(stmt).rowcount or 0)
