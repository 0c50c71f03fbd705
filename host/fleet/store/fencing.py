"""Fencing: the store refuses a write made under a lease its writer no longer holds.

The replica that holds a lease (``host.fleet.replica``) runs the writes that lead to commands inside
``fenced(Fence(...))``. Every ``StoreBase._write`` made in that context first locks the lease's row
(``SELECT ... FOR SHARE`` on PostgreSQL) and checks, on the database's clock, that the row still
names this holder and epoch and has not expired; otherwise the transaction is rolled back with
``LeaseLostError``. The row lock orders the write against a takeover: another replica's
``UPDATE leases ...`` waits for this transaction, so a write either commits under a lease that was
valid when it committed, or sees the new epoch and is refused. A holder that was paused (a GC, a
stopped VM, a lost network) and wakes up after its lease expired can therefore store no command,
and a command it never stored it never publishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease as its holder believes it holds it."""

    name: str
    holder: str
    epoch: int


class LeaseLostError(Exception):
    """A fenced write found that its lease has another holder or epoch, or has expired."""


_current: ContextVar[Fence | None] = ContextVar("edgeloop_fence", default=None)


def current() -> Fence | None:
    """The fence of this thread's (context's) writes, if any."""
    return _current.get()


@contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Every store write in this block checks ``fence`` first (``None``: no check, a single process)."""
    token = _current.set(fence)
    try:
        yield
    finally:
        _current.reset(token)
