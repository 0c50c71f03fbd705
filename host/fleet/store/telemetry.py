"""Served telemetry: one row per ``TelemetryReport`` (a time series per device) and the running totals.

Ingest writes them in the same transaction as the other reports (``ReportQueries.add_reports``),
idempotent on ``message_id``: only reports that were new add to the totals in ``served_counts``.
Each column is bounded by the wire model (lengths, integer ranges, finite floats), and the few
strings the protocol does not bound as tightly as the columns (release versions) are clipped, so
that one odd report cannot fail the batch it arrived in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from host.fleet.store.base import StoreBase, aware
from host.fleet.store.records import TelemetryRecord
from host.fleet.store.schema import served_counts, telemetry
from shared.protocol import DriftStats, TelemetryReport

REQUESTS = "requests"
LATENCY_SUM = "latency_ms_sum"
ERROR_PREFIX = "error:"
# a mean latency above this adds only this much to the latency total: the wire does not bound
# LatencyStats, and PostgreSQL raises on a float8 sum that overflows (the device's histograms end at 10 min)
MAX_MEAN_MS = 1e7

Insert = Callable[[sa.Table], Any]


def _clip(value: str | None, n: int) -> str | None:
    return value[:n] if value is not None else None


def telemetry_row(fleet: str, r: TelemetryReport, received: datetime) -> dict[str, Any]:
    lat, drift = r.latency_ms, r.drift
    return {
        "message_id": str(r.message_id),
        "fleet": fleet,
        "device_id": r.device_id,
        "release_name": r.release.name if r.release else None,
        "release_version": _clip(r.release.version, 32) if r.release else None,
        "runtime": _clip(r.runtime, 64),
        "precision": r.precision,
        "window_s": r.window_s,
        "requests": r.requests,
        "errors": dict(r.errors),
        "error_count": sum(r.errors.values()),
        "throughput_ips": r.throughput_ips,
        "p50_ms": lat.p50 if lat else None,
        "p90_ms": lat.p90 if lat else None,
        "p99_ms": lat.p99 if lat else None,
        "max_ms": lat.max if lat else None,
        "mean_ms": lat.mean if lat else None,
        "mean_batch": r.mean_batch,
        "mean_queue_depth": r.mean_queue_depth,
        "max_queue_depth": r.max_queue_depth,
        "drift_score": drift.score if drift else None,
        "drift_threshold": drift.threshold if drift else None,
        "drifted": drift.drifted if drift else None,
        "drift": drift.model_dump(mode="json") if drift else None,
        "sent_at": r.sent_at,
        "received_at": received,
    }


def _totals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """What new rows add to each device's counters, one row per (fleet, device, counter)."""
    add: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        fleet, device = row["fleet"], row["device_id"]
        add[fleet, device, REQUESTS] += row["requests"]
        if row["mean_ms"] is not None:
            add[fleet, device, LATENCY_SUM] += min(row["mean_ms"], MAX_MEAN_MS) * row["requests"]
        for kind, n in row["errors"].items():
            add[fleet, device, ERROR_PREFIX + kind] += n
    return [{"fleet": f, "device_id": d, "counter": c, "value": float(v)} for (f, d, c), v in add.items()]


def insert_telemetry(
    conn: Connection, insert: Insert, items: Sequence[tuple[str, TelemetryReport]], received: datetime
) -> int:
    """Insert (fleet, report) pairs inside the caller's transaction; returns how many were new."""
    rows = [telemetry_row(fleet, r, received) for fleet, r in items]
    res = conn.execute(
        insert(telemetry).on_conflict_do_nothing(index_elements=["message_id"]).returning(telemetry.c.message_id),
        rows,
    )
    new = {r[0] for r in res}
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:  # a batch that repeats a message id counts its first report, the one the table kept
        if row["message_id"] in new:
            fresh.setdefault(row["message_id"], row)
    totals = _totals(list(fresh.values()))
    if totals:
        stmt = insert(served_counts)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["fleet", "device_id", "counter"],
                set_={"value": served_counts.c.value + stmt.excluded.value},
            ),
            totals,
        )
    return len(new)


def _record(row: Any) -> TelemetryRecord:
    m = dict(row._mapping)
    m["sent_at"], m["received_at"] = aware(m["sent_at"]), aware(m["received_at"])
    m["drift"] = DriftStats.model_validate(m["drift"]) if m["drift"] is not None else None
    m["errors"] = dict(m["errors"] or {})
    return TelemetryRecord(**m)


class TelemetryQueries(StoreBase):
    def telemetry_series(
        self, fleet: str | None = None, device: str | None = None, limit: int = 2000
    ) -> list[TelemetryRecord]:
        """The latest ``limit`` telemetry points received (of a fleet, a device), oldest first."""
        t = telemetry.c
        q = sa.select(telemetry).order_by(t.received_at.desc(), t.sent_at.desc()).limit(limit)
        if fleet:
            q = q.where(telemetry.c.fleet == fleet)
        if device:
            q = q.where(telemetry.c.device_id == device)
        with self.engine.connect() as conn:
            rows = [_record(r) for r in conn.execute(q)]
        return rows[::-1]

    def latest_telemetry(self, fleet: str | None = None) -> dict[tuple[str, str], TelemetryRecord]:
        """Each device's latest telemetry point, by the device's own (bounded) ``sent_at``: its reports only."""
        t = telemetry.c
        latest = sa.select(t.fleet, t.device_id, sa.func.max(t.sent_at).label("at"))
        if fleet:
            latest = latest.where(t.fleet == fleet)
        sub = latest.group_by(t.fleet, t.device_id).subquery()
        q = sa.select(telemetry).join(
            sub, sa.and_(t.fleet == sub.c.fleet, t.device_id == sub.c.device_id, t.sent_at == sub.c.at)
        )
        with self.engine.connect() as conn:
            return {(r.fleet, r.device_id): _record(r) for r in conn.execute(q)}

    def served_totals(self, fleet: str | None = None) -> dict[tuple[str, str], dict[str, float]]:
        """Each device's running totals: ``requests``, ``latency_ms_sum`` and ``error:<kind>``."""
        q = sa.select(served_counts)
        if fleet:
            q = q.where(served_counts.c.fleet == fleet)
        out: dict[tuple[str, str], dict[str, float]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                out.setdefault((r.fleet, r.device_id), {})[r.counter] = float(r.value)
        return out

    def count_telemetry(self, fleet: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(telemetry)
        if fleet:
            q = q.where(telemetry.c.fleet == fleet)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)
