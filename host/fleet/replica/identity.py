"""Who a replica is, and what it refuses at start: a live twin with its replica id, a live peer on SQLite."""

from __future__ import annotations

import logging
import re
import socket
import time

from host.fleet.store import Store
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def default_replica_id() -> str:
    """The host name: stable across restarts (a restarted replica takes its own leases and ingest sessions
    back at once) and, in containers, one per container. Two replicas on one machine need --replica-id."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
    return name or "edgeloop"


def check_replica_id(replica_id: str) -> str:
    if not _ID.fullmatch(replica_id):
        raise EdgeloopError(f"--replica-id {replica_id!r}: use 1-64 of A-Z a-z 0-9 _ . - (it names MQTT client ids)")
    return replica_id


def refuse_live_peers(store: Store, replica_id: str, lease_s: float) -> None:
    """Refuse to start next to a live process that renews leases in our name (two replicas given one id), or,
    on SQLite, next to any other live replica: SQLite serves one ``edgeloop serve`` process.

    A lease still unexpired may also be a dead predecessor's (``kill -9``, then a restart): watched for a
    renewal period, a live holder renews it and a dead one does not, so a restart waits at most that long."""
    sqlite = store.dialect == "sqlite"
    held = {x.name: x for x in store.leases() if x.remaining_s > 0 and (x.holder == replica_id or sqlite)}
    if not held:
        return
    wait = min(max(x.remaining_s for x in held.values()), lease_s / 3 + 0.5)
    log.info("leases %s are held; watching them for %.1f s for a live holder", sorted(held), wait)
    time.sleep(wait)
    for x in store.leases():
        before = held.get(x.name)
        if before is None or x.holder != before.holder or x.remaining_s <= before.remaining_s - wait + 0.25:
            continue  # not renewed meanwhile: its holder is gone
        if x.holder == replica_id:
            raise EdgeloopError(
                f"another process runs as replica {replica_id!r} (it renewed lease {x.name!r} just now): "
                "give each replica its own --replica-id (default: the host name)"
            )
        raise EdgeloopError(
            f"replica {x.holder!r} uses this SQLite store (it renewed lease {x.name!r} just now); SQLite serves "
            "one `edgeloop serve` process: for several replicas use PostgreSQL (--store postgresql://...)"
        )
