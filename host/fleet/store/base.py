"""The store's connection: the engine (SQLite with WAL, or PostgreSQL), migrations, the writer lock."""

from __future__ import annotations

import enum
import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from host.fleet.store import fencing
from host.fleet.store.fencing import Fence, LeaseLostError
from host.fleet.store.schema import MIGRATIONS, leases, schema_version
from shared.errors import EdgeloopError
from shared.protocol import Message

log = logging.getLogger(__name__)

# How far ahead of the host's clock a device's clock may run. A ``sent_at`` further ahead (the wire takes
# dates up to 2200) is stored as the host's clock + this, in the columns and in the stored payload alike,
# so that no device can date what it sends into the future: to keep its ``last_seen`` fresh while it is
# gone, or to stay on top of a per-device "latest". Views shared by devices are ordered by ``received_at``
# (the host's clock at ingest) anyway. Five minutes covers an NTP-synced fleet and the broker's queueing.
MAX_CLOCK_SKEW = timedelta(minutes=5)

M = TypeVar("M", bound=Message)

# The key of the transaction-scoped advisory lock that serialises migrations (PostgreSQL): any constant
# the database's other users do not take ("edgeloop" in ASCII)
MIGRATION_LOCK = 0x6564_6765_6C6F_6F70 >> 1


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


def bounded_sent_at(message: M, received: datetime) -> M:
    """``message`` as the store keeps it: a ``sent_at`` later than ``received`` + ``MAX_CLOCK_SKEW`` is
    moved back to that (a report or a status dated in the future must not sort or count as the newest)."""
    latest = received + MAX_CLOCK_SKEW
    return message if message.sent_at <= latest else message.model_copy(update={"sent_at": latest})


class Unset(enum.Enum):
    """A keyword argument that was not given (``None`` is a value: it clears a column)."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given, for an UPDATE of just those columns."""
    return {k: v for k, v in values.items() if v is not UNSET}


class StoreBase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = self._make_engine(url)
        self.dialect = self.engine.dialect.name
        self._lock = threading.Lock()  # SQLite allows one writer; serialise our own writers
        self.migrate()

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if "://" not in url:  # a bare path means SQLite
            url = f"sqlite:///{Path(url).resolve()}"
        try:
            if url.startswith("sqlite"):
                engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

                @sa.event.listens_for(engine, "connect")
                def _pragmas(dbapi_conn: Any, record: Any) -> None:
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.close()

                return engine
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError) as e:
            raise EdgeloopError(f"cannot open store {url!r}: {e}") from e

    def migrate(self) -> int:
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":  # replicas that start together migrate one after the other
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                schema_version.create(conn, checkfirst=True)
                done = {r[0] for r in conn.execute(sa.select(schema_version.c.version))}
                for i, step in enumerate(MIGRATIONS, 1):
                    if i not in done:
                        step(conn)
                        conn.execute(schema_version.insert().values(version=i, applied_at=now()))
                        log.info("store %s migrated to schema v%d", self.dialect, i)
        except sa.exc.OperationalError as e:
            raise EdgeloopError(f"cannot reach the store {self.engine.url!r}: {e.orig}") from e
        return len(MIGRATIONS)

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)

    def _insert(self, table: sa.Table) -> Any:
        """INSERT with the dialect's ON CONFLICT clauses (both SQLite and PostgreSQL have them)."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    def db_now(self) -> Any:
        """The database's clock in seconds since 1970, as an SQL expression: leases expire on it, so the
        replicas' own clocks never need to agree."""
        if self.dialect == "postgresql":
            return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)
        return (sa.func.julianday("now") - 2440587.5) * 86400.0  # SQLite: milliseconds

    def _write(self, *statements: Any) -> int:
        """Run statements in one transaction, one writer at a time; the rows they changed. Inside
        ``fencing.fenced(fence)`` the lease is checked first, in the same transaction."""
        fence = fencing.current()
        with self._lock, self.engine.begin() as conn:
            if fence is not None:
                self._check_fence(conn, fence)
            return sum(max(0, conn.execute(stmt).rowcount or 0) for stmt in statements)

    def _check_fence(self, conn: Any, fence: Fence) -> None:
        """Raise LeaseLostError unless ``fence`` still holds its lease; the row stays locked (FOR SHARE on
        PostgreSQL) until the transaction ends, so no takeover commits in between."""
        q = (
            sa.select(leases.c.holder, leases.c.epoch, (leases.c.expires_at > self.db_now()).label("valid"))
            .where(leases.c.name == fence.name)
            .with_for_update(read=True)
        )
        row = conn.execute(q).first()
        if row is None or row.holder != fence.holder or row.epoch != fence.epoch or not row.valid:
            now_held = "nobody" if row is None else f"{row.holder}, epoch {row.epoch}, valid {bool(row.valid)}"
            raise LeaseLostError(f"lease {fence.name!r} epoch {fence.epoch} of {fence.holder} is gone: {now_held}")

    def close(self) -> None:
        self.engine.dispose()
