"""Telemetry ingest: MQTT reports and statuses -> the store, in batches, idempotent on message_id;
nothing acknowledged to the broker before it is stored.

Reports arrive on ``edgeloop/v1/{fleet}/{device}/report/{kind}``; with an MQTT 5 broker several
workers share the load through ``$share/edgeloop-ingest/...``, and on a 3.1.1-only broker (the
embedded amqtt) one worker uses the plain subscription. The modules, by job: ``worker`` (one
worker: its session, validation, the writer thread's batches and acks), ``process`` (a worker in a
process of its own), ``watchdog`` (restarts dead workers), ``stats`` (their counters).
"""

from __future__ import annotations

from host.fleet.ingest.process import IngestProcess
from host.fleet.ingest.stats import IngestStats
from host.fleet.ingest.watchdog import IngestWatchdog
from host.fleet.ingest.worker import RECEIVE_MAXIMUM, SHARE_GROUP, Ingest

__all__ = ["RECEIVE_MAXIMUM", "SHARE_GROUP", "Ingest", "IngestProcess", "IngestStats", "IngestWatchdog"]
