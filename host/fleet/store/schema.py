"""The store's tables and the migrations that create and upgrade them.

``MIGRATIONS`` is an ordered list of steps and ``schema_version`` records which have run, so a newer
edgeloop upgrades an older store in place (the same idea as Alembic's revision chain, without a
second tool for a dozen tables). A new step goes at the end; a step that has run never changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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
    sa.Column("state", sa.String(16), nullable=False),  # records.DeviceState
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
    sa.Column("warnings", sa.JSON),  # DeviceStatus.warnings (v5)
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
    sa.Column("state", sa.String(16), nullable=False),  # records.RolloutState
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
    sa.Column("state", sa.String(16), nullable=False),  # records.WaveState
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
    sa.Column("state", sa.String(16), nullable=False),  # records.DeviceRolloutState
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
    sa.Column("epoch", sa.BigInteger),  # the controller lease's epoch the command was stored under (v7)
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
    sa.Column("code", sa.String(64)),  # an EventReport's code (v4; NULL for other kinds)
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
    sa.Column("received_at", sa.DateTime(timezone=True)),  # the host's clock (v6; filled in for older rows)
    sa.Index("ix_bench_time", "fleet", "sent_at"),
)


telemetry = sa.Table(
    "telemetry",
    metadata,
    # one row per TelemetryReport: the served-latency and drift time series of every device
    sa.Column("message_id", sa.String(36), primary_key=True),
    sa.Column("fleet", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("release_name", sa.String(64)),
    sa.Column("release_version", sa.String(32)),
    sa.Column("runtime", sa.String(64)),
    sa.Column("precision", sa.String(8)),
    sa.Column("window_s", sa.Float, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.JSON, nullable=False),  # failed requests by kind
    sa.Column("error_count", sa.BigInteger, nullable=False),
    sa.Column("throughput_ips", sa.Float, nullable=False),
    sa.Column("p50_ms", sa.Float),  # the latency columns are NULL for a window with errors only
    sa.Column("p90_ms", sa.Float),
    sa.Column("p99_ms", sa.Float),
    sa.Column("max_ms", sa.Float),
    sa.Column("mean_ms", sa.Float),
    sa.Column("mean_batch", sa.Float, nullable=False),
    sa.Column("mean_queue_depth", sa.Float, nullable=False),
    sa.Column("max_queue_depth", sa.BigInteger, nullable=False),
    sa.Column("drift_score", sa.Float),  # the drift columns are NULL without a reference or a full window
    sa.Column("drift_threshold", sa.Float),
    sa.Column("drifted", sa.Boolean),
    sa.Column("drift", sa.JSON),  # the whole DriftStats
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_telemetry_device_time", "fleet", "device_id", "sent_at"),
    sa.Index("ix_telemetry_time", "sent_at"),
)

served_counts = sa.Table(
    "served_counts",
    metadata,
    # running totals of what each device served (Prometheus counters): they only grow, whatever a
    # retention policy later removes from ``telemetry``; one row per counter so that every update
    # is an atomic "value = value + n" upsert, also with several ingest processes
    sa.Column("fleet", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("counter", sa.String(40), primary_key=True),  # requests | latency_ms_sum | error:<kind>
    sa.Column("value", sa.Float, nullable=False),
)


recalibrations = sa.Table(
    "recalibrations",
    metadata,
    # one row per recalibrate command the host sent (calibrate or promote), stored before it is published
    sa.Column("command_id", sa.String(36), primary_key=True),
    sa.Column("fleet", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # calibrate | promote
    sa.Column("promote", sa.Boolean, nullable=False),  # calibrate: True = auto, False = manual (kept)
    sa.Column("calibration_id", sa.String(36)),  # promote: the calibration command it promotes
    sa.Column("release_name", sa.String(64)),  # what the device ran when the command was sent
    sa.Column("release_version", sa.String(32)),
    sa.Column("command", sa.Text, nullable=False),  # the exact payload, so a re-send keeps the message id
    sa.Column("published", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_recalibrations_device", "fleet", "device_id", "created_at"),
)

calibrations = sa.Table(
    "calibrations",
    metadata,
    # one row per CalibrationReport: the outcome of a recalibrate, flattened for the views
    sa.Column("message_id", sa.String(36), primary_key=True),
    sa.Column("command_id", sa.String(36)),
    sa.Column("fleet", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("rollout_id", sa.String(64)),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("release_name", sa.String(64), nullable=False),
    sa.Column("release_version", sa.String(32), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("n_images", sa.Integer, nullable=False),
    sa.Column("n_eval", sa.Integer, nullable=False),
    sa.Column("evaluation", sa.String(16), nullable=False),  # labelled | agreement | none
    sa.Column("top1_before", sa.Float),
    sa.Column("top1_after", sa.Float),
    sa.Column("agreement_before", sa.Float),
    sa.Column("agreement_after", sa.Float),
    sa.Column("precision_before", sa.String(8)),
    sa.Column("form", sa.String(32)),
    sa.Column("form_reason", sa.String(512)),
    sa.Column("artifact", sa.String(160)),
    sa.Column("calibration_s", sa.Float),
    sa.Column("build_s", sa.Float),
    sa.Column("moved_ranges", sa.JSON, nullable=False),  # list of RangeShift
    sa.Column("better", sa.Boolean),
    sa.Column("promoted", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_calibrations_command", "command_id"),
    sa.Index("ix_calibrations_device_time", "fleet", "device_id", "sent_at"),
)


leases = sa.Table(
    "leases",
    metadata,
    # what one replica of `edgeloop serve` holds for a while: the rollout controller, an ingest slot (v7).
    # Times are seconds since 1970 on the database's clock (``StoreBase.db_now``), never a replica's own.
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),  # the replica id
    sa.Column("epoch", sa.BigInteger, nullable=False),  # +1 at each change of holder: the fencing token
    sa.Column("expires_at", sa.Float, nullable=False),
)


def _m1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[devices, releases, rollouts, rollout_waves, rollout_devices, reports, benchmarks])


def _m2(conn: Connection) -> None:
    # v2: events are queried by code on the dashboard
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_reports_kind_time ON reports (kind, sent_at)"))


def _m3(conn: Connection) -> None:
    # v3: served telemetry (TelemetryReport) as a time series, and the served totals
    metadata.create_all(conn, tables=[telemetry, served_counts])


def _m4(conn: Connection) -> None:
    # v4: field re-calibration (the commands the host sent and their outcomes), and events by code
    if "code" not in {c["name"] for c in sa.inspect(conn).get_columns("reports")}:  # _m1 made it on a new store
        conn.execute(sa.text("ALTER TABLE reports ADD COLUMN code VARCHAR(64)"))
        for message_id, payload in conn.execute(
            sa.select(reports.c.message_id, reports.c.payload).where(reports.c.kind == "event")
        ).all():
            code = json.loads(payload).get("code")
            conn.execute(reports.update().where(reports.c.message_id == message_id).values(code=code))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_reports_code ON reports (code, fleet, device_id, sent_at)"))
    metadata.create_all(conn, tables=[recalibrations, calibrations])


def _m5(conn: Connection) -> None:
    # v5: what a device should run and cannot (DeviceStatus.warnings: TensorRT that fails to load on a Jetson)
    if "warnings" not in {c["name"] for c in sa.inspect(conn).get_columns("devices")}:  # _m1 made it on a new store
        conn.execute(sa.text("ALTER TABLE devices ADD COLUMN warnings JSON"))


def _m6(conn: Connection) -> None:
    # v6: views that list several devices' reports are ordered by the host's clock (received_at), never by the
    # sent_at a device chose; benchmarks get the column, older rows the time their report was logged
    if "received_at" not in {c["name"] for c in sa.inspect(conn).get_columns("benchmarks")}:  # _m1 made it
        conn.execute(sa.text("ALTER TABLE benchmarks ADD COLUMN received_at TIMESTAMP WITH TIME ZONE"))
    logged = sa.select(reports.c.received_at).where(reports.c.message_id == benchmarks.c.message_id)
    received = sa.func.coalesce(logged.scalar_subquery(), benchmarks.c.sent_at)
    conn.execute(benchmarks.update().where(benchmarks.c.received_at.is_(None)).values(received_at=received))
    for index in (
        "ix_reports_kind_received ON reports (kind, received_at)",
        "ix_bench_received ON benchmarks (fleet, received_at)",
        "ix_telemetry_received ON telemetry (received_at)",
        "ix_calibrations_received ON calibrations (received_at)",
    ):
        conn.execute(sa.text("CREATE INDEX IF NOT EXISTS " + index))


def _m7(conn: Connection) -> None:
    # v7: several `serve` replicas on one store: leases, the lease epoch stored with each rollout command, and
    # at most one active rollout per fleet even when two replicas start one at the same moment
    metadata.create_all(conn, tables=[leases])
    if "epoch" not in {c["name"] for c in sa.inspect(conn).get_columns("rollout_devices")}:  # _m1 made it
        conn.execute(sa.text("ALTER TABLE rollout_devices ADD COLUMN epoch BIGINT"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_rollouts_active_fleet ON rollouts (fleet) "
            "WHERE state IN ('running', 'rolling_back')"
        )
    )


MIGRATIONS: list[Callable[[Connection], None]] = [_m1, _m2, _m3, _m4, _m5, _m6, _m7]
