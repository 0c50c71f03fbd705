"""Fleet telemetry and rollout state: SQLAlchemy Core over SQLite (default, WAL) or PostgreSQL.

The schema is created and migrated by the product: ``MIGRATIONS`` is an ordered list of steps and
``schema_version`` records which have run, so a newer edgeloop upgrades an older store in place
(the same idea as Alembic's revision chain, without a second tool for a dozen tables).

Report writes are idempotent on ``message_id`` (INSERT ... ON CONFLICT DO NOTHING), so redelivered
MQTT messages and several ingest workers never duplicate a row.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from shared.errors import EdgeloopError
from shared.protocol import (
    BenchmarkReport,
    CalibrationReport,
    DeployReport,
    DeviceStatus,
    EventReport,
    ReleaseManifest,
)

log = logging.getLogger(__name__)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("fleet", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("release_name", sa.String(64)),
    sa.Column("release_version", sa.String(32)),
    sa.Column("previous_name", sa.String(64)),
    sa.Column("previous_version", sa.String(32)),
    sa.Column("runtime", sa.String(64)),
    sa.Column("runtime_version", sa.String(64)),
    sa.Column("precision", sa.String(8)),
    sa.Column("accelerator", sa.String(128)),
    sa.Column("gpu", sa.Boolean, nullable=False, default=False),
    sa.Column("agent_version", sa.String(32)),
    sa.Column("system", sa.JSON),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
)

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("release_name", sa.String(64), nullable=False),
    sa.Column("release_version", sa.String(32), nullable=False),
    sa.Column("fleet", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running, completed, aborted, rolled_back
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("current_wave", sa.Integer, nullable=False, default=0),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

rollout_waves = sa.Table(
    "rollout_waves",
    metadata,
    sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id"), primary_key=True),
    sa.Column("wave", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending, sent, passed, failed
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("deadline", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("summary", sa.JSON),
)

rollout_devices = sa.Table(
    "rollout_devices",
    metadata,
    sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id"), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("command_id", sa.String(36)),
    sa.Column("command", sa.Text),  # the exact payload, so a resumed host re-sends the same message id
    sa.Column("published", sa.Boolean, nullable=False, default=False),
    sa.Column("previous_name", sa.String(64)),
    sa.Column("previous_version", sa.String(32)),
    sa.Column("was_online", sa.Boolean),
    sa.Column("top1", sa.Float),
    sa.Column("p99_ms", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("message_id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("fleet", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("rollout_id", sa.String(64)),
    sa.Column("command_id", sa.String(36)),
    sa.Column("release_name", sa.String(64)),
    sa.Column("release_version", sa.String(32)),
    sa.Column("ok", sa.Boolean),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Index("ix_reports_rollout", "rollout_id", "kind"),
    sa.Index("ix_reports_device_time", "fleet", "device_id", "sent_at"),
)

benchmarks = sa.Table(
    "benchmarks",
    metadata,
    sa.Column("message_id", sa.String(36), primary_key=True),
    sa.Column("fleet", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("rollout_id", sa.String(64)),
    sa.Column("release_name", sa.String(64)),
    sa.Column("release_version", sa.String(32)),
    sa.Column("runtime", sa.String(64)),
    sa.Column("precision", sa.String(8)),
    sa.Column("accelerator", sa.String(128)),
    sa.Column("p50_ms", sa.Float),
    sa.Column("p90_ms", sa.Float),
    sa.Column("p99_ms", sa.Float),
    sa.Column("top1", sa.Float),
    sa.Column("n_images", sa.Integer),
    sa.Column("throughput_ips", sa.Float),
    sa.Column("e2e_throughput_ips", sa.Float),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_bench_time", "fleet", "sent_at"),
)


def _m1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[devices, releases, rollouts, rollout_waves, rollout_devices, reports, benchmarks])


def _m2(conn: Connection) -> None:
    # v2: events are queried by code on the dashboard
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_reports_kind_time ON reports (kind, sent_at)"))


MIGRATIONS: list[Callable[[Connection], None]] = [_m1, _m2]


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Store:
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

    # -- schema ---------------------------------------------------------------------------
    def migrate(self) -> int:
        try:
            with self.engine.begin() as conn:
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
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    # -- devices ----------------------------------------------------------------------------
    def upsert_status(self, status: DeviceStatus) -> None:
        values = {
            "fleet": status.fleet,
            "device_id": status.device_id,
            "state": status.state,
            "release_name": status.release.name if status.release else None,
            "release_version": status.release.version if status.release else None,
            "previous_name": status.previous_release.name if status.previous_release else None,
            "previous_version": status.previous_release.version if status.previous_release else None,
            "runtime": status.runtime,
            "runtime_version": status.runtime_version,
            "precision": status.precision,
            "accelerator": status.accelerator,
            "gpu": status.gpu,
            "agent_version": status.agent_version,
            "system": status.system.model_dump(mode="json") if status.system else None,
            "last_seen": status.sent_at,
        }
        stmt = self._insert(devices).values(**values)
        update = {k: v for k, v in values.items() if k not in ("fleet", "device_id")}
        if status.state == "offline":  # a Last Will knows nothing about the release: keep what we had
            update = {"state": "offline", "last_seen": status.sent_at}
        stmt = stmt.on_conflict_do_update(index_elements=["fleet", "device_id"], set_=update)
        with self._lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def devices(self, fleet: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(devices).order_by(devices.c.fleet, devices.c.device_id)
        if fleet:
            q = q.where(devices.c.fleet == fleet)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["last_seen"] = _aware(r["last_seen"])
        return rows

    # -- releases ---------------------------------------------------------------------------
    def add_release(self, manifest: ReleaseManifest) -> None:
        stmt = (
            self._insert(releases)
            .values(
                name=manifest.name,
                version=manifest.version,
                manifest=manifest.model_dump_json(),
                created_at=manifest.created_at,
            )
            .on_conflict_do_nothing()
        )
        with self._lock, self.engine.begin() as conn:
            conn.execute(stmt)

    def release(self, name: str, version: str) -> ReleaseManifest | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(releases.c.manifest).where(releases.c.name == name, releases.c.version == version)
            ).first()
        return ReleaseManifest.model_validate_json(row[0]) if row else None

    def releases(self) -> list[ReleaseManifest]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(releases.c.manifest).order_by(releases.c.created_at)).all()
        return [ReleaseManifest.model_validate_json(r[0]) for r in rows]

    # -- reports ----------------------------------------------------------------------------
    def add_reports(
        self, items: Sequence[tuple[str, DeployReport | BenchmarkReport | CalibrationReport | EventReport]]
    ) -> int:
        """Insert (fleet, report) pairs in one transaction; duplicates by message_id are skipped.

        Returns how many were new.
        """
        if not items:
            return 0
        received = now()
        rows, bench_rows = [], []
        for fleet, r in items:
            release = getattr(r, "release", None)
            rows.append(
                {
                    "message_id": str(r.message_id),
                    "kind": r.kind,
                    "fleet": fleet,
                    "device_id": r.device_id,
                    "rollout_id": getattr(r, "rollout_id", None),
                    "command_id": str(r.command_id) if getattr(r, "command_id", None) else None,
                    "release_name": release.name if release else None,
                    "release_version": release.version if release else None,
                    "ok": getattr(r, "ok", None),
                    "sent_at": r.sent_at,
                    "received_at": received,
                    "payload": r.model_dump_json(),
                }
            )
            if isinstance(r, BenchmarkReport):
                bench_rows.append(
                    {
                        "message_id": str(r.message_id),
                        "fleet": fleet,
                        "device_id": r.device_id,
                        "rollout_id": r.rollout_id,
                        "release_name": r.release.name if r.release else None,
                        "release_version": r.release.version if r.release else None,
                        "runtime": r.runtime,
                        "precision": r.precision,
                        "accelerator": r.accelerator,
                        "p50_ms": r.latency_ms.p50,
                        "p90_ms": r.latency_ms.p90,
                        "p99_ms": r.latency_ms.p99,
                        "top1": r.top1,
                        "n_images": r.n_images,
                        "throughput_ips": r.raw_throughput_ips,
                        "e2e_throughput_ips": r.end_to_end_throughput_ips,
                        "sent_at": r.sent_at,
                    }
                )
        with self._lock, self.engine.begin() as conn:
            res = conn.execute(
                self._insert(reports)
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(reports.c.message_id),
                rows,
            )
            new = {r[0] for r in res}
            fresh = [b for b in bench_rows if b["message_id"] in new]
            if fresh:
                conn.execute(self._insert(benchmarks).on_conflict_do_nothing(index_elements=["message_id"]), fresh)
        return len(new)

    def count_reports(self, kind: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(reports)
        if kind:
            q = q.where(reports.c.kind == kind)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def rollout_reports(self, rollout_id: str, kind: str) -> list[dict[str, Any]]:
        q = (
            sa.select(reports.c.device_id, reports.c.payload, reports.c.command_id)
            .where(reports.c.rollout_id == rollout_id, reports.c.kind == kind)
            .order_by(reports.c.sent_at)
        )
        with self.engine.connect() as conn:
            return [{"device_id": r[0], "payload": json.loads(r[1]), "command_id": r[2]} for r in conn.execute(q)]

    def reports_for_commands(self, command_ids: Iterable[str], kind: str) -> list[dict[str, Any]]:
        ids = list(command_ids)
        if not ids:
            return []
        q = (
            sa.select(reports.c.device_id, reports.c.payload, reports.c.command_id)
            .where(reports.c.command_id.in_(ids), reports.c.kind == kind)
            .order_by(reports.c.sent_at)
        )
        with self.engine.connect() as conn:
            return [{"device_id": r[0], "payload": json.loads(r[1]), "command_id": r[2]} for r in conn.execute(q)]

    def latest_benchmarks(self, fleet: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        latest = sa.select(benchmarks.c.fleet, benchmarks.c.device_id, sa.func.max(benchmarks.c.sent_at).label("t"))
        if fleet:
            latest = latest.where(benchmarks.c.fleet == fleet)
        sub = latest.group_by(benchmarks.c.fleet, benchmarks.c.device_id).subquery()
        q = sa.select(benchmarks).join(
            sub,
            sa.and_(
                benchmarks.c.fleet == sub.c.fleet,
                benchmarks.c.device_id == sub.c.device_id,
                benchmarks.c.sent_at == sub.c.t,
            ),
        )
        with self.engine.connect() as conn:
            return {(r.fleet, r.device_id): dict(r._mapping) for r in conn.execute(q)}

    def benchmark_series(self, fleet: str | None = None, limit: int = 5000) -> list[dict[str, Any]]:
        q = sa.select(benchmarks).order_by(benchmarks.c.sent_at.desc()).limit(limit)
        if fleet:
            q = q.where(benchmarks.c.fleet == fleet)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["sent_at"] = _aware(r["sent_at"])
        return rows[::-1]

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        q = (
            sa.select(reports.c.fleet, reports.c.payload)
            .where(reports.c.kind == "event")
            .order_by(reports.c.sent_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [{"fleet": r[0], **json.loads(r[1])} for r in conn.execute(q)]

    # -- rollouts -----------------------------------------------------------------------------
    def create_rollout(
        self,
        rollout_id: str,
        manifest: ReleaseManifest,
        fleet: str,
        config: dict[str, Any],
        waves: list[list[dict[str, Any]]],
    ) -> None:
        t = now()
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                rollouts.insert().values(
                    id=rollout_id,
                    release_name=manifest.name,
                    release_version=manifest.version,
                    fleet=fleet,
                    state="running",
                    config=config,
                    current_wave=0,
                    reason="",
                    created_at=t,
                    updated_at=t,
                )
            )
            for i, members in enumerate(waves):
                conn.execute(rollout_waves.insert().values(rollout_id=rollout_id, wave=i, state="pending"))
                for m in members:
                    conn.execute(
                        rollout_devices.insert().values(
                            rollout_id=rollout_id, wave=i, state="pending", published=False, updated_at=t, **m
                        )
                    )

    def rollouts(self, state: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(rollouts).order_by(rollouts.c.created_at)
        if state:
            q = q.where(rollouts.c.state == state)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def rollout(self, rollout_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
            if r is None:
                return None
            out = dict(r._mapping)
            out["waves"] = [
                dict(w._mapping)
                for w in conn.execute(
                    sa.select(rollout_waves)
                    .where(rollout_waves.c.rollout_id == rollout_id)
                    .order_by(rollout_waves.c.wave)
                )
            ]
            out["devices"] = [
                dict(d._mapping)
                for d in conn.execute(
                    sa.select(rollout_devices)
                    .where(rollout_devices.c.rollout_id == rollout_id)
                    .order_by(rollout_devices.c.wave, rollout_devices.c.device_id)
                )
            ]
        for w in out["waves"]:
            for k in ("started_at", "deadline", "finished_at"):
                w[k] = _aware(w[k])
        return out

    def update_rollout(self, rollout_id: str, **values: Any) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(rollouts.update().where(rollouts.c.id == rollout_id).values(updated_at=now(), **values))

    def update_wave(self, rollout_id: str, wave: int, **values: Any) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                rollout_waves.update()
                .where(rollout_waves.c.rollout_id == rollout_id, rollout_waves.c.wave == wave)
                .values(**values)
            )

    def update_rollout_device(self, rollout_id: str, device_id: str, **values: Any) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                rollout_devices.update()
                .where(rollout_devices.c.rollout_id == rollout_id, rollout_devices.c.device_id == device_id)
                .values(updated_at=now(), **values)
            )

    def close(self) -> None:
        self.engine.dispose()
