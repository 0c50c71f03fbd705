"""Fleet telemetry and rollout state: SQLAlchemy Core over SQLite (default, WAL) or PostgreSQL.

The modules, by job: ``schema`` (tables and the migrations that create and upgrade them),
``records`` (the typed records the store hands back, and every state defined once;
``calibration_records`` for field re-calibration), ``base`` (the engine, migrations, the writer
lock) and one module of queries per table group: ``devices``, ``releases``, ``reports``,
``telemetry`` (served latency and drift), ``calibrations`` (recalibrate commands and their
outcomes), ``rollouts``, ``leases`` (what one of several ``serve`` replicas holds; ``fencing`` refuses
the writes of a replica that lost its lease). ``Store`` joins
the query groups into one object.
"""

from __future__ import annotations

from host.fleet.store.base import now
from host.fleet.store.calibrations import CalibrationQueries
from host.fleet.store.devices import DeviceQueries
from host.fleet.store.leases import LeaseQueries
from host.fleet.store.records import FleetDevice
from host.fleet.store.releases import ReleaseQueries
from host.fleet.store.reports import ReportQueries
from host.fleet.store.rollouts import RolloutQueries
from host.fleet.store.schema import metadata
from host.fleet.store.telemetry import TelemetryQueries

__all__ = ["Store", "metadata", "now"]


class Store(
    DeviceQueries, ReleaseQueries, ReportQueries, TelemetryQueries, CalibrationQueries, RolloutQueries, LeaseQueries
):
    """The one store object: every query group over one engine and one writer lock."""

    def fleet(self, fleet: str | None = None) -> list[FleetDevice]:
        """The fleet view (API, CLI, dashboard, /metrics): each device with its latest benchmark, its
        latest served telemetry (latency, drift), its latest calibration and INT8 gate event."""
        bench, served = self.latest_benchmarks(fleet), self.latest_telemetry(fleet)
        calibrated, gates = self.latest_calibrations(fleet), self.latest_gate_events(fleet)
        out = []
        for d in self.devices(fleet):
            key = (d.fleet, d.device_id)
            out.append(FleetDevice.of(d, bench.get(key), served.get(key), calibrated.get(key), gates.get(key)))
        return out
